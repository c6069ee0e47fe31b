"""The container and deployment files, checked without a Docker engine:

- docker-compose.yml (+ the cluster and TLS overrides) is valid for docker-compose 1.29.2
  (scripts/check-compose, which installs it into .venv-compose on first use), and the resolved
  configuration has what the deployment needs: scalable gateways (no host port, no container name),
  nginx on 3000 with deploy/nginx.conf, NATS with JetStream config, a volume and monitoring, a health
  check on every service and start-up ordered by health; an invalid file is refused;
- the safe defaults: nothing but nginx's 3000 published beyond the host's loopback (NATS's client port on
  127.0.0.1 only, its monitoring port not at all, and bound to the container's loopback by the nats
  configs); no default password anywhere, so Compose refuses to start without them, and
  deploy/make-env.sh writes an .env with random ones that Compose and nats-server accept; nginx's
  public listener refuses /metrics;
- the Dockerfile is multi-stage (Swift build image → slim Debian with libnats) and builds the three
  executables into one image;
- deploy/'s nats-server configs pass `nats-server -t`, and refuse to load without the passwords;
- the nginx config made from deploy/nginx.conf has ip_hash and the WebSocket upgrade headers and passes
  `nginx -t`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from deployment import DEPLOY, PASSWORDS, ROUTE_PASSWORD, ROUTE_PASSWORD_VARIABLE, nginx_binary
from system import REPO_ROOT, nats_server_binary

COMPOSE_VENV = REPO_ROOT / ".venv-compose"
# Every password the Compose files need: the users' and (docker-compose.cluster.yml) the routes'.
ALL_PASSWORDS = {**PASSWORDS, ROUTE_PASSWORD_VARIABLE: ROUTE_PASSWORD}
SERVICES = {"nats", "chat-service", "broadcaster", "gateway", "nginx"}


@pytest.fixture(scope="module")
def compose_checked():
    result = subprocess.run([str(REPO_ROOT / "scripts/check-compose")], capture_output=True, text=True,
                            timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    for files in ("docker-compose.yml", "docker-compose.yml docker-compose.cluster.yml",
                  "docker-compose.yml docker-compose.tls.yml"):
        assert f"ok: {files}" in result.stderr, result.stderr
    return result


def compose_config(*files: str, env_file: Path, passwords: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`docker-compose config` of `files` with only `passwords` (and `env_file`) as NATS settings: a
    developer's own .env or environment does not count."""
    args = [str(COMPOSE_VENV / "bin/docker-compose"), "--env-file", str(env_file)]
    for file in files:
        args += ["-f", file]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    return subprocess.run([*args, "config"], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                          env={**env, **(passwords or {})})


def resolved(*files: str, env_file: Path | None = None) -> dict:
    """The resolved configuration, with the session's passwords (or those of `env_file`)."""
    with tempfile.TemporaryDirectory() as directory:
        empty = Path(directory) / "empty.env"
        empty.write_text("")
        config = compose_config(*files, env_file=env_file or empty, passwords=None if env_file else ALL_PASSWORDS)
    assert config.returncode == 0, config.stderr
    as_json = subprocess.run([str(COMPOSE_VENV / "bin/python"), "-c",
                              "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                             input=config.stdout, capture_output=True, text=True, timeout=30)
    assert as_json.returncode == 0, as_json.stderr
    return json.loads(as_json.stdout)


def test_compose_file_is_valid_and_has_the_topology(compose_checked):
    config = resolved("docker-compose.yml")
    services = config["services"]
    assert set(services) == SERVICES

    # One image, three commands, each with its own NATS user.
    for name in ("chat-service", "broadcaster", "gateway"):
        service = services[name]
        assert service["image"] == "nats-chat:latest" and service["build"]["context"] == str(REPO_ROOT)
        assert service["command"] == [name]
        assert service["environment"]["NATS_USER"] == name
        assert service["environment"]["NATS_URL"] == "nats://nats:4222"

    # Gateways scale: no published port and no fixed container name (`--scale gateway=3`).
    gateway = services["gateway"]
    assert "ports" not in gateway and "container_name" not in gateway
    assert not any("container_name" in s for s in services.values())

    nginx = services["nginx"]
    assert [(p["published"], p["target"]) for p in nginx["ports"]] == [(3000, 3000)]
    assert any(v.endswith("deploy/nginx.conf:/etc/nginx/nginx.conf:ro") for v in nginx["volumes"])

    nats = services["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats-server.conf"]
    assert "nats-data:/data:rw" in nats["volumes"] and "nats-data" in config["volumes"]
    assert set(nats["environment"]) == set(PASSWORDS)
    assert nats["environment"] == PASSWORDS
    # The services' passwords are the ones the server gets.
    for name, variable in (("chat-service", "NATS_CHAT_SERVICE_PASSWORD"), ("broadcaster", "NATS_BROADCASTER_PASSWORD"),
                           ("gateway", "NATS_GATEWAY_PASSWORD")):
        assert services[name]["environment"]["NATS_PASSWORD"] == nats["environment"][variable]

    # Health checks everywhere; start-up ordered by health: nats → chat-service → broadcaster → gateway → nginx.
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    order = {"chat-service": {"nats"}, "broadcaster": {"chat-service"}, "gateway": {"chat-service", "broadcaster"},
             "nginx": {"gateway"}}
    for name, needs in order.items():
        depends = services[name]["depends_on"]
        assert set(depends) == needs, (name, depends)
        assert all(d["condition"] == "service_healthy" for d in depends.values()), (name, depends)
    assert "depends_on" not in nats


def published(service: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of every published port; "0.0.0.0" when no address
    is given (all interfaces). docker-compose 1.29 prints `ip:host:container/proto` strings for ports
    with an address and mappings for the others."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", "0.0.0.0"), int(port["published"]), int(port["target"])))
            continue
        mapping = str(port).split("/")[0].split(":")
        host_ip = mapping[0] if len(mapping) == 3 else "0.0.0.0"
        ports.append((host_ip, int(mapping[-2]), int(mapping[-1])))
    return ports


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cluster.yml"),
                                   ("docker-compose.yml", "docker-compose.tls.yml")])
def test_compose_publishes_only_nginx_beyond_the_loopback(compose_checked, files):
    services = resolved(*files)["services"]
    exposed = {name: published(service) for name, service in services.items() if published(service)}
    # nginx's 3000 is the public entry; NATS's client port only on the host's loopback (the nats CLI as
    # admin); monitoring (8222), the services' status ports and the cluster routes nowhere.
    assert exposed == {"nginx": [("0.0.0.0", 3000, 3000)], "nats": [("127.0.0.1", 4222, 4222)]}, exposed


@pytest.mark.parametrize("config", ["nats-server.conf", "nats-cluster.conf"])
def test_nats_monitoring_listens_on_the_loopback_only(config):
    """Monitoring has no authentication: every nats config binds it to the loopback, where the
    containers' health checks ask it."""
    text = (DEPLOY / config).read_text()
    assert re.findall(r"^http:\s*(\S+)", text, re.M) == ["127.0.0.1:8222"]
    assert re.findall(r"^listen:\s*(\S+)", text, re.M) == ["0.0.0.0:4222"]
    tls = (DEPLOY / "nats-server-tls.conf").read_text()
    assert "include nats-server.conf" in tls and not re.search(r"^(http|monitor_port|https)\b", tls, re.M)
    compose = (REPO_ROOT / "docker-compose.yml").read_text() + (REPO_ROOT / "docker-compose.cluster.yml").read_text()
    assert compose.count("http://127.0.0.1:8222/healthz") == 2


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cluster.yml"),
                                   ("docker-compose.yml", "docker-compose.tls.yml")])
def test_compose_refuses_to_start_without_the_passwords(compose_checked, files, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    needed = ALL_PASSWORDS if "docker-compose.cluster.yml" in files else PASSWORDS
    assert compose_config(*files, env_file=empty, passwords=needed).returncode == 0
    for missing in needed:
        partial = {k: v for k, v in needed.items() if k != missing}
        refused = compose_config(*files, env_file=empty, passwords=partial)
        assert refused.returncode != 0, (missing, refused.stdout[:300])
        assert "deploy/make-env.sh" in refused.stderr, refused.stderr
    # No built-in fallback is left in any file.
    for name in files:
        text = (REPO_ROOT / name).read_text()
        assert "dev-" not in text and not re.search(r"PASSWORD:?-", text), name


def test_make_env_writes_random_passwords_that_compose_and_nats_accept(compose_checked, tmp_path):
    env_file = tmp_path / ".env"
    made = subprocess.run([str(DEPLOY / "make-env.sh"), str(env_file)], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == set(ALL_PASSWORDS)
    assert len(set(values.values())) == 5
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9]{31}", v) for v in values.values()), values

    # Compose reads them from the file and hands the same one to nats and to its service, and the route
    # password to every cluster node and into every route URL.
    services = resolved("docker-compose.yml", env_file=env_file)["services"]
    assert services["nats"]["environment"] == {k: v for k, v in values.items() if k in PASSWORDS}
    cluster = resolved("docker-compose.yml", "docker-compose.cluster.yml", env_file=env_file)["services"]
    for node in ("nats", "nats-2", "nats-3"):
        assert cluster[node]["environment"][ROUTE_PASSWORD_VARIABLE] == values[ROUTE_PASSWORD_VARIABLE]
        routes = cluster[node]["command"][cluster[node]["command"].index("--routes") + 1].split(",")
        assert routes == [f"nats-route://route:{values[ROUTE_PASSWORD_VARIABLE]}@nats-{n}:6222" for n in (1, 2, 3)]
    for name, variable in (("chat-service", "NATS_CHAT_SERVICE_PASSWORD"), ("broadcaster", "NATS_BROADCASTER_PASSWORD"),
                           ("gateway", "NATS_GATEWAY_PASSWORD")):
        assert services[name]["environment"]["NATS_PASSWORD"] == values[variable]
    # nats-server takes them (deployment.py's sessions log in with them too).
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    for config in ("nats-server.conf", "nats-cluster.conf"):
        checked = subprocess.run([nats_server_binary(), "-t", "-c", str(DEPLOY / config)], capture_output=True,
                                 text=True, timeout=30, env={**env, **values, "NATS_SERVER_NAME": "nats-1"})
        output = checked.stdout + checked.stderr
        assert checked.returncode == 0 and "is valid" in output, output

    # A second run keeps every password (a running deployment keeps working) and fills in a missing one.
    lines = env_file.read_text().splitlines()
    env_file.write_text("\n".join(line for line in lines if not line.startswith("NATS_GATEWAY_PASSWORD=")) + "\n")
    again = subprocess.run([str(DEPLOY / "make-env.sh"), str(env_file)], capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    refreshed = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert {k: v for k, v in refreshed.items() if k != "NATS_GATEWAY_PASSWORD"} == \
        {k: v for k, v in values.items() if k != "NATS_GATEWAY_PASSWORD"}
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{31}", refreshed["NATS_GATEWAY_PASSWORD"])
    assert refreshed["NATS_GATEWAY_PASSWORD"] != values["NATS_GATEWAY_PASSWORD"]
    unchanged = subprocess.run([str(DEPLOY / "make-env.sh"), str(env_file)], capture_output=True, text=True, timeout=30)
    assert unchanged.returncode == 0 and "nothing changed" in unchanged.stderr
    assert dict(line.split("=", 1) for line in env_file.read_text().splitlines()) == refreshed
    # An empty assignment is a mistake to fix, not to paper over with a second line.
    env_file.write_text("NATS_ADMIN_PASSWORD=\n")
    empty = subprocess.run([str(DEPLOY / "make-env.sh"), str(env_file)], capture_output=True, text=True, timeout=30)
    assert empty.returncode != 0 and "empty NATS_ADMIN_PASSWORD" in empty.stderr
    assert env_file.read_text() == "NATS_ADMIN_PASSWORD=\n"


def test_compose_overrides_cluster_and_tls(compose_checked):
    cluster = resolved("docker-compose.yml", "docker-compose.cluster.yml")["services"]
    assert {"nats", "nats-2", "nats-3"} <= set(cluster)
    nodes = {name: cluster[name] for name in ("nats", "nats-2", "nats-3")}
    assert {n["environment"]["NATS_SERVER_NAME"] for n in nodes.values()} == {"nats-1", "nats-2", "nats-3"}
    assert all(n["command"][:2] == ["-c", "/etc/nats/nats-cluster.conf"] for n in nodes.values())
    # The routes authenticate: every node dials all three with the route password.
    for node in nodes.values():
        assert node["environment"][ROUTE_PASSWORD_VARIABLE] == ROUTE_PASSWORD
        assert node["command"][2:] == ["--routes", ",".join(f"nats-route://route:{ROUTE_PASSWORD}@nats-{n}:6222"
                                                             for n in (1, 2, 3))]
    assert len({tuple(v for v in n["volumes"] if v.endswith(":/data:rw")) for n in nodes.values()}) == 3
    assert cluster["chat-service"]["environment"]["CHAT_REPLICAS"] == "3"
    for name in ("chat-service", "broadcaster", "gateway"):
        assert cluster[name]["environment"]["NATS_URL"] == "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"

    tls = resolved("docker-compose.yml", "docker-compose.tls.yml")["services"]
    assert tls["nats"]["command"] == ["-c", "/etc/nats/nats-server-tls.conf"]
    for name in ("chat-service", "broadcaster", "gateway"):
        assert tls[name]["environment"]["NATS_URL"] == "tls://nats:4222"
        assert tls[name]["environment"]["NATS_CA"] == "/etc/nats-ca/ca.pem"


def test_an_invalid_compose_file_is_refused(compose_checked, tmp_path):
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("condition: service_healthy", "condition: service_cheerful", 1))
    result = subprocess.run([str(REPO_ROOT / "scripts/check-compose"), str(broken)], capture_output=True, text=True,
                            timeout=120, cwd=REPO_ROOT)
    assert result.returncode != 0 and "INVALID" in result.stderr, result.stderr


def test_dockerfile_is_multi_stage_with_one_image_for_three_executables():
    text = (REPO_ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    assert len(stages) == 2, stages
    assert re.search(r"^ARG SWIFT_IMAGE=swift:6\.\d+", text, re.M) and stages[0] == ("${SWIFT_IMAGE}", "build")
    assert re.search(r"^ARG RUNTIME_IMAGE=debian:\S+-slim", text, re.M) and stages[1][0] == "${RUNTIME_IMAGE}"
    build, runtime = text.split("\nFROM ${RUNTIME_IMAGE}")
    assert "libnats-dev" in build and "--static-swift-stdlib" in build
    for product in ("chat-service", "broadcaster", "gateway"):
        assert product in build.split("for product in")[1].split(";")[0]
    assert re.search(r"libnats3\.\d", runtime) and "libssl3" in runtime
    assert "COPY --from=build /out/ /usr/local/bin/" in runtime and 'CMD ["gateway"]' in runtime
    assert "USER chat" in runtime
    assert "COPY web/ /srv/web/" in runtime and "WEB_ROOT=/srv/web" in runtime
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".build*", ".venv*", ".git", "Package.resolved"} <= set(ignored)


@pytest.mark.parametrize("config", ["nats-server.conf", "nats-server-tls.conf", "nats-cluster.conf"])
def test_nats_configs_load_and_need_the_passwords(config, tmp_path):
    extra = {"NATS_SERVER_NAME": "nats-1", ROUTE_PASSWORD_VARIABLE: ROUTE_PASSWORD} if "cluster" in config else {}
    if "tls" in config:
        made = subprocess.run([str(DEPLOY / "make-certs.sh"), str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        extra = {"NATS_TLS_CERT": str(tmp_path / "server-cert.pem"), "NATS_TLS_KEY": str(tmp_path / "server-key.pem"),
                 "NATS_TLS_CA": str(tmp_path / "ca.pem")}
    binary = nats_server_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    good = subprocess.run([binary, "-t", "-c", str(DEPLOY / config)], capture_output=True, text=True, timeout=30,
                          env={**env, **PASSWORDS, **extra})
    assert good.returncode == 0 and "is valid" in good.stdout + good.stderr, good.stdout + good.stderr
    missing = dict(PASSWORDS)
    del missing["NATS_GATEWAY_PASSWORD"]
    bad = subprocess.run([binary, "-t", "-c", str(DEPLOY / config)], capture_output=True, text=True, timeout=30,
                         env={**env, **missing, **extra})
    assert bad.returncode != 0 and "NATS_GATEWAY_PASSWORD" in bad.stdout + bad.stderr
    if "cluster" in config:  # the routes' password too
        no_route = {k: v for k, v in extra.items() if k != ROUTE_PASSWORD_VARIABLE}
        bad = subprocess.run([binary, "-t", "-c", str(DEPLOY / config)], capture_output=True, text=True, timeout=30,
                             env={**env, **PASSWORDS, **no_route})
        assert bad.returncode != 0 and ROUTE_PASSWORD_VARIABLE in bad.stdout + bad.stderr


def test_auth_conf_gateway_permissions_are_what_the_brief_says():
    """The text of the gateway's rules (test_permissions.py proves what the server makes of them)."""
    text = (DEPLOY / "auth.conf").read_text()
    gateway = text[text.index("user: gateway"):]
    publish = gateway[gateway.index("publish:"):gateway.index("subscribe:")]
    subscribe = gateway[gateway.index("subscribe:"):]
    assert 'allow: ["chat.svc.>", "chat.typing.>"]' in publish
    assert 'allow: ["chat.deliver.>", "chat.typing.>", "_INBOX_gateway.>"]' in subscribe
    for denied in ("$JS.>", "$KV.>", "$SRV.>", "chat.room.>", "chat.rooms.>", "_INBOX.>", "_INBOX_chat.>",
                   "_INBOX_broadcaster.>"):
        assert f'"{denied}"' in publish and f'"{denied}"' in subscribe, denied
    assert '"chat.deliver.>"' in publish and '"chat.svc.>"' in subscribe
    assert "allow_responses" not in gateway
    # No allow list names the shared default prefix any more.
    allows = re.findall(r"allow: \[([^\]]*)\]", text)
    assert allows and not any('"_INBOX.>"' in allow for allow in allows), allows


def test_nginx_config_from_deploy_has_sticky_sessions_and_websocket_upgrade(tmp_path):
    made = subprocess.run([str(REPO_ROOT / "scripts/nginx-config"), "127.0.0.1:18080", str(tmp_path),
                           "127.0.0.1:18081", "127.0.0.1:18082"], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    conf = made.stdout
    upstream = conf[conf.index("upstream gateways"):conf.index("}", conf.index("upstream gateways"))]
    assert "ip_hash;" in upstream
    assert re.findall(r"server (\S+) max_fails", upstream) == ["127.0.0.1:18081", "127.0.0.1:18082"]
    assert "listen 127.0.0.1:18080;" in conf
    for directive in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                      "proxy_set_header Connection $connection_upgrade;", "proxy_read_timeout 1h;"):
        assert directive in conf
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    checked = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(path), "-e", "stderr",
                              "-g", f"pid {tmp_path}/nginx.pid;"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    # The Compose copy differs only in its upstream line and port.
    deploy_text = (DEPLOY / "nginx.conf").read_text()
    assert "server gateway:3000 max_fails=1 fail_timeout=10s;  # @gateways" in deploy_text
    assert "listen 3000;" in deploy_text and "ip_hash;" in deploy_text
    # One server block, the public one, and it refuses /metrics before anything is proxied
    # (test_deploy_nginx.py asks the real nginx).
    assert deploy_text.count("server {") == 1 and re.findall(r"^\s*listen (\S+);", deploy_text, re.M) == ["3000"]
    assert re.search(r"location \^~ /metrics \{\s*return 404;\s*\}", conf)
