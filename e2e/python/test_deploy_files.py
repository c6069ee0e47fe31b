"""The container and deployment files, checked without a Docker engine:

- docker-compose.yml (+ the cluster and TLS overrides) is valid for docker-compose 1.29.2
  (scripts/check-compose, which installs it into .venv-compose on first use), and the resolved
  configuration has what the deployment needs: scalable gateways (no host port, no container name),
  nginx on 3000 with deploy/nginx.conf, NATS with JetStream config, a volume and monitoring, a health
  check on every service and start-up ordered by health; an invalid file is refused;
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

import pytest

from deployment import DEPLOY, PASSWORDS, nginx_binary
from system import REPO_ROOT, nats_server_binary

COMPOSE_VENV = REPO_ROOT / ".venv-compose"
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


def resolved(*files: str) -> dict:
    args = [str(COMPOSE_VENV / "bin/docker-compose")]
    for file in files:
        args += ["-f", file]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    config = subprocess.run([*args, "config"], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env)
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
    assert 8222 in [p["target"] for p in nats["ports"]]
    assert set(nats["environment"]) == set(PASSWORDS)
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


def test_compose_overrides_cluster_and_tls(compose_checked):
    cluster = resolved("docker-compose.yml", "docker-compose.cluster.yml")["services"]
    assert {"nats", "nats-2", "nats-3"} <= set(cluster)
    nodes = {name: cluster[name] for name in ("nats", "nats-2", "nats-3")}
    assert {n["environment"]["NATS_SERVER_NAME"] for n in nodes.values()} == {"nats-1", "nats-2", "nats-3"}
    assert all(n["command"] == ["-c", "/etc/nats/nats-cluster.conf"] for n in nodes.values())
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
    extra = {"NATS_SERVER_NAME": "nats-1"} if "cluster" in config else {}
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


def test_auth_conf_gateway_permissions_are_what_the_brief_says():
    text = (DEPLOY / "auth.conf").read_text()
    gateway = text[text.index("user: gateway"):]
    publish = gateway[gateway.index("publish:"):gateway.index("subscribe:")]
    subscribe = gateway[gateway.index("subscribe:"):]
    assert 'allow: ["chat.svc.>", "chat.typing.>"]' in publish
    assert '"$JS.>"' in publish and '"$KV.>"' in publish and '"chat.room.>"' in publish
    assert 'allow: ["chat.deliver.>", "chat.typing.>", "_INBOX.>"]' in subscribe
    assert "allow_responses" not in gateway


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
