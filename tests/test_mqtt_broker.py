"""MQTT against brokers that misbehave or demand more: restarts, kill -9, passwords, TLS, Home Assistant."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from mqtt_helpers import Observer, RecordingActions, make_certs, mqtt_config, running
from peers import free_port
from ripieno.daemon import mqtt as mqttmod
from ripieno.daemon.config import ConfigError

HELPER = Path(__file__).with_name("mqtt_helpers.py")


async def test_broker_restart_brings_ripieno_back_online_with_its_state(make_broker, caplog):
    caplog.set_level(logging.INFO, logger="ripieno.daemon.mqtt")
    broker = make_broker()
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with running(cfg) as (controller, _, _):
        async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
            await obs.wait_for(f"{base}/state")
            await obs.publish(f"{base}/set/mode", "accompany")
            await obs.wait_for(f"{base}/state", lambda v: v["mode"] == "accompany")
        broker.restart()  # no persistence: every retained message is gone with the old process
        await controller.apply("temperature", b"1.25")  # a change while the broker is away is not lost
        async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
            await obs.wait_for(f"{base}/status", lambda v: v == "online", timeout=20)
            await obs.wait_for(f"{base}/state", lambda v: v["mode"] == "accompany", timeout=20)
        async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:  # retained for late joiners
            state = await obs.wait_for(f"{base}/state")
            assert state.retain and state.value["mode"] == "accompany" and state.value["temperature"] == 1.25
            await obs.publish(f"{base}/set/mode", "off")  # and it listens again
            await obs.wait_for(f"{base}/state", lambda v: v["mode"] == "off")
    assert "connection to" in caplog.text and "lost" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a broker restart is not an error"


async def test_slow_model_load_neither_blocks_panic_nor_dies_with_the_connection(make_broker, tmp_path):
    (tmp_path / "jazz.safetensors").write_bytes(b"")
    broker = make_broker()
    cfg = mqtt_config(broker.host, broker.port, engine={"models_dir": str(tmp_path)})
    base = cfg.mqtt.base_topic
    actions = RecordingActions(load_s=1.5)
    async with running(cfg, actions) as (controller, _, _):
        async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
            await obs.wait_for(f"{base}/state")
            await obs.publish(f"{base}/set/model", "jazz")
            await obs.publish(f"{base}/cmd/panic", "")
            await obs.wait(lambda: actions.calls == ["panic"], what="panic while the model loads")
            assert actions.loaded == []
        broker.restart()
        async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
            await obs.wait_for(f"{base}/state", lambda v: v["model"] == "jazz", timeout=20)
        assert actions.loaded == [str(tmp_path / "jazz.safetensors")] and controller.state.model == "jazz"


async def test_kill_9_makes_the_broker_publish_the_will(broker):
    base = f"will-{id(broker)}"
    proc = subprocess.Popen([sys.executable, str(HELPER), broker.host, str(broker.port), base],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with Observer(broker.host, broker.port, [f"{base}/status"]) as obs:
            await obs.wait_for(f"{base}/status", lambda v: v == "online", timeout=20)
            proc.send_signal(signal.SIGKILL)
            await obs.wait_for(f"{base}/status", lambda v: v == "offline")
        async with Observer(broker.host, broker.port, [f"{base}/status"]) as late:
            assert (await late.wait_for(f"{base}/status")).retain
    finally:
        proc.kill()
        proc.wait(5)


def _password_broker(make_broker, tmp_path: Path, user: str, password: str):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), user, password], check=True, capture_output=True, timeout=10)
    pw.chmod(0o644)
    port = free_port()
    return make_broker(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n", port=port)


async def test_password_broker_admits_the_right_password(make_broker, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    broker = _password_broker(make_broker, tmp_path, "ripieno", "s3cret-pass")
    cfg = mqtt_config(broker.host, broker.port, mqtt={"username": "ripieno"})
    base = cfg.mqtt.base_topic
    async with running(cfg, env={"RIPIENO_MQTT_PASSWORD": "s3cret-pass"}):
        async with Observer(broker.host, broker.port, [f"{base}/status"], username="ripieno", password="s3cret-pass") as obs:
            await obs.wait_for(f"{base}/status", lambda v: v == "online")
    assert "s3cret-pass" not in caplog.text


async def test_password_broker_refuses_a_wrong_password_with_one_clear_line(make_broker, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    broker = _password_broker(make_broker, tmp_path, "ripieno", "s3cret-pass")
    secret = tmp_path / "mqtt-password"
    secret.write_text("wrong-pass\n# only the first line is the password\n")
    cfg = mqtt_config(broker.host, broker.port, mqtt={"username": "ripieno", "password_file": str(secret)})
    async with running(cfg, env={}) as (_, _, task):
        async with Observer(broker.host, broker.port, [f"{cfg.mqtt.base_topic}/status"], username="ripieno", password="s3cret-pass") as obs:
            await obs.wait(lambda: "refused the credentials" in caplog.text, what="the credentials error in the log")
            assert obs.seen == [] and not task.done()  # never online, still running (and retrying)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "ripieno.daemon.mqtt"]
    assert len(errors) == 1
    assert "user 'ripieno'" in errors[0].getMessage() and "password_file" in errors[0].getMessage()
    assert "wrong-pass" not in caplog.text


def _tls_broker(make_broker, certs):
    port = free_port()
    return make_broker(
        f"listener {port} 127.0.0.1\nallow_anonymous true\ncafile {certs['ca.crt']}\n"
        f"certfile {certs['server.crt']}\nkeyfile {certs['server.key']}\nrequire_certificate true\n",
        port=port,
    )


async def test_tls_broker_with_client_certificate(make_broker, tmp_path, caplog):
    certs = make_certs(tmp_path / "certs")
    broker = _tls_broker(make_broker, certs)
    tls = {"tls": True, "ca_file": str(certs["ca.crt"])}
    cfg = mqtt_config(broker.host, broker.port, mqtt=tls | {"cert_file": str(certs["client.crt"]), "key_file": str(certs["client.key"])})
    base = cfg.mqtt.base_topic
    params = aiomqtt.TLSParameters(ca_certs=str(certs["ca.crt"]), certfile=str(certs["client.crt"]), keyfile=str(certs["client.key"]))
    async with running(cfg):
        async with Observer(broker.host, broker.port, [f"{base}/#"], tls_params=params) as obs:
            await obs.wait_for(f"{base}/status", lambda v: v == "online")
            await obs.publish(f"{base}/set/temperature", "0.5")
            await obs.wait_for(f"{base}/state", lambda v: v["temperature"] == 0.5)
    # a CA that did not sign the broker's certificate: refused by ripieno, logged, not fatal
    caplog.set_level(logging.WARNING, logger="ripieno.daemon.mqtt")
    wrong_ca = mqtt_config(broker.host, broker.port, mqtt=tls | {"ca_file": str(certs["server.crt"]),
                           "cert_file": str(certs["client.crt"]), "key_file": str(certs["client.key"])})
    async with running(wrong_ca) as (_, _, task):
        async with Observer(broker.host, broker.port, [f"{wrong_ca.mqtt.base_topic}/status"], tls_params=params) as obs:
            await obs.wait(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, what="the TLS failure in the log")
            assert obs.seen == [] and not task.done()


def test_unusable_mqtt_files_are_one_line_config_errors(tmp_path):
    cases = [
        ({"tls": True, "ca_file": str(tmp_path / "nope.crt")}, "mqtt.ca_file"),
        ({"tls": False, "ca_file": "/etc/hostname"}, "tls = false"),
        ({"tls": True, "key_file": "/etc/hostname"}, "key_file needs"),
        ({"username": "u", "password_file": str(tmp_path / "missing")}, "no such file"),
        ({"password_file": "/etc/hostname"}, "username is empty"),
        ({"tls": True, "ca_file": "/etc/hostname"}, "not a usable CA certificate"),  # #15: retried forever before
        ({"tls": True, "cert_file": "/etc/hostname"}, "not a certificate and its key"),
    ]
    for mqtt, msg in cases:
        cfg = mqtt_config("127.0.0.1", 1883, mqtt=mqtt)
        with pytest.raises(ConfigError, match=msg) as err:
            mqttmod.client_options(cfg, env={})
        assert "\n" not in str(err.value) and "test-config" in str(err.value)


async def test_discovery_configs_appear_and_are_resent_on_ha_birth(broker):
    prefix = f"ha-{id(broker)}-disc"
    cfg = mqtt_config(broker.host, broker.port, mqtt={"discovery": True, "discovery_prefix": prefix})
    base = cfg.mqtt.base_topic
    async with running(cfg) as (_, actions, _):
        async with Observer(broker.host, broker.port, [f"{prefix}/+/+/+/config"]) as obs:
            await obs.wait(lambda: len(obs.seen) >= 12, what="12 discovery configs")
        async with Observer(broker.host, broker.port, [f"{prefix}/+/+/+/config", f"{base}/state"]) as obs:  # retained
            configs = await obs.wait(lambda: [s for s in obs.seen if s.topic.endswith("/config")] if len(obs.seen) >= 13 else None,
                                     what="12 retained discovery configs and the state")
            assert len(configs) == 12 and all(c.retain for c in configs)
            kinds = sorted(c.topic.split("/")[1] for c in configs)
            assert kinds == ["button", "button", "number", "number", "number", "select", "select",
                             "sensor", "sensor", "sensor", "sensor", "switch"]
            state = obs.on(f"{base}/state")[0].value
            for c in configs:
                v = c.value
                assert v["availability_topic"] == f"{base}/status"
                if "command_topic" in v:
                    mqttmod.route(base, v["command_topic"])  # every HA control drives a real command
                if "value_template" in v and "value_json." in v["value_template"]:
                    assert v["value_template"].split("value_json.")[1].split()[0] in state
            assert len({c.value["unique_id"] for c in configs}) == 12
            by_object = {c.topic.split("/")[-2]: c.value for c in configs}  # {prefix}/{component}/{node}/{object}/config
            tempo, confidence = by_object["tempo_bpm"], by_object["beat_confidence"]
            assert (tempo["unit_of_measurement"], tempo["icon"]) == ("bpm", "mdi:metronome")
            assert confidence["icon"] == "mdi:target" and "unit_of_measurement" not in confidence
            assert {tempo["state_topic"], confidence["state_topic"]} == {f"{base}/state"}
            # issue #8: a sampling temperature is dice, not a thermometer
            assert by_object["temperature"]["icon"] == "mdi:dice-multiple"
            variation, accompany = by_object["variation"], by_object["accompany"]
            assert (variation["min"], variation["max"], variation["step"], variation["icon"]) == (0.0, 1.0, 0.05, "mdi:shuffle-variant")
            assert variation["command_topic"] == f"{base}/set/variation" and state["variation"] == 0.25
            assert accompany["options"] == ["bass", "chords", "voice"] and accompany["command_topic"] == f"{base}/set/accompany"
            assert state["accompany"] == "bass"
            # issue #8: the panic and reset buttons press the existing commands, as Home Assistant presses them
            for obj in ("panic", "reset"):
                button = by_object[obj]
                assert button["command_topic"] == f"{base}/cmd/{obj}"
                await obs.publish(button["command_topic"], button["payload_press"])
            await obs.wait(lambda: actions.calls == ["panic", "reset"], what="panic and reset at the engine")
            mark = len(obs.seen)
            await obs.publish(f"{prefix}/status", "online")  # Home Assistant restarted
            await obs.wait(lambda: len([s for s in obs.seen[mark:] if s.topic.endswith("/config")]) == 12,
                           what="discovery re-sent")
            await obs.publish(f"{prefix}/status", "offline")
            await asyncio.sleep(0.3)
            assert len([s for s in obs.seen[mark:] if s.topic.endswith("/config")]) == 12
        # leave the session broker clean
        async with Observer(broker.host, broker.port, []) as cleaner:
            for c in configs:
                await cleaner.publish(c.topic, "", retain=True)


@pytest.mark.parametrize("how", ["cli", "module"])
def test_bench_mqtt_prints_its_json(how):
    cmd = [str(Path(sys.executable).parent / "ripieno"), "bench", "mqtt"] if how == "cli" else [sys.executable, "-m", "ripieno.bench.mqtt"]
    r = subprocess.run([*cmd, "--flood", "300", "--seconds", "0.3", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout.strip().splitlines()[-1])
    for phase in ("idle_lateness_us", "flood_lateness_us", "broker_down_lateness_us"):
        assert data[phase]["n"] > 0 and data[phase]["p99"] >= data[phase]["p50"]
    assert data["commands_applied"] > 0 and data["online_again_after_restart_s"] < 20
