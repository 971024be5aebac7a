"""The MQTT topic contract against the real mosquitto: run_mqtt in-process, a real client observing.

The engine side is RecordingActions (the other half of the Actions interface); the broker and
every client are real.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess

import aiomqtt
import pytest

from mqtt_helpers import Observer, RecordingActions, mqtt_config, running
from ripieno.daemon import config as cfgmod
from ripieno.daemon import mqtt as mqttmod
from peers import free_port
from ripieno.daemon.commands import MAX_PAYLOAD, Controller, State, cc_command

STATE_KEYS = {"enabled", "mode", "temperature", "silence_s", "model", "input", "output", "notes_in", "notes_out",
              "tempo_bpm", "beat_confidence", "variation", "accompany"}


async def test_connect_publishes_retained_online_and_state(broker):
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with running(cfg) as (controller, _, _):
        async with Observer(broker.host, broker.port, [f"{base}/#"]) as first:
            await first.wait_for(f"{base}/state")
        async with Observer(broker.host, broker.port, [f"{base}/#"]) as late:  # joins later: sees retained
            status = await late.wait_for(f"{base}/status", lambda v: v == "online")
            state = await late.wait_for(f"{base}/state")
    assert status.retain and state.retain
    assert set(state.value) == STATE_KEYS
    assert state.value == json.loads(controller.state.to_json())


async def test_every_command_is_reflected_in_state(broker, tmp_path):
    (tmp_path / "jazz.safetensors").write_bytes(b"")
    cfg = mqtt_config(broker.host, broker.port, engine={"models_dir": str(tmp_path)})
    base = cfg.mqtt.base_topic
    async with running(cfg) as (controller, actions, _), Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        await obs.wait_for(f"{base}/state")
        for topic, payload, key, expected in [
            ("set/enabled", "off", "enabled", False),
            ("set/enabled", "true", "enabled", True),
            ("set/mode", "accompany", "mode", "accompany"),
            ("set/temperature", "1.5", "temperature", 1.5),
            ("set/silence_s", "2.5", "silence_s", 2.5),
            ("set/model", "jazz", "model", "jazz"),
            ("set/variation", "0.85", "variation", 0.85),
            ("set/accompany", "voice", "accompany", "voice"),
        ]:
            mark = len(obs.seen)
            await obs.publish(f"{base}/{topic}", payload)
            await obs.wait_for(f"{base}/state", lambda v: v[key] == expected, since=mark)
        await obs.publish(f"{base}/cmd/reset", "")
        await obs.publish(f"{base}/cmd/panic", "PRESS")
        await obs.wait(lambda: actions.calls == ["reset", "panic"], what="reset and panic at the engine")
        assert actions.loaded == [str(tmp_path / "jazz.safetensors")]
        assert obs.on(f"{base}/error") == []
        final = State(True, "accompany", 1.5, 2.5, "jazz", "virtual", "virtual", 0, 0, variation=0.85, accompany="voice")
        assert controller.state == final and actions.states[-1] == final


BAD = [
    ("set/tempo", b"120", "unknown topic"),
    ("cmd/explode", b"", "unknown topic"),
    ("set/mode/extra", b"off", "unknown topic"),
    ("set/enabled", b"maybe", "not one of"),
    ("set/mode", b"solo", "not one of"),
    ("set/temperature", b"warm", "not a number"),
    ("set/temperature", b"7", "out of range"),
    ("set/silence_s", b"-1", "out of range"),
    ("set/model", b"../../etc/passwd", "not a model name"),
    ("set/model", b"nosuch", "no model"),
    ("set/mode", b"a" * (MAX_PAYLOAD + 1), "limit"),
    ("set/variation", b"1.5", "out of range"),
    ("set/variation", b"lots", "not a number"),
    ("set/accompany", b"drums", "not one of"),
]


async def test_each_bad_command_is_answered_on_error_and_changes_nothing(broker):
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with running(cfg) as (controller, actions, _), Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        await obs.wait_for(f"{base}/state")
        before, states_before = controller.state, len(obs.on(f"{base}/state"))
        for topic, payload, reason in BAD:
            mark = len(obs.seen)
            await obs.publish(f"{base}/{topic}", payload)
            err = await obs.wait_for(f"{base}/error", since=mark)
            assert err.value["topic"] == f"{base}/{topic}"
            assert reason in err.value["reason"], err.value
            assert err.value["payload"] == payload.decode()[:200]
            assert not err.retain
        await obs.wait(lambda: len(obs.on(f"{base}/error")) == len(BAD), what="one error per bad command")
        assert controller.state == before
        assert actions.states == [] and actions.calls == [] and actions.loaded == []
        assert len(obs.on(f"{base}/state")) == states_before
        assert controller.stats.commands_refused == len(BAD)


async def test_a_retained_command_is_not_replayed_on_connect(broker):
    """A stale retained set/... would undo later changes after every reconnect: refused, with an error."""
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        await obs.publish(f"{base}/set/mode", "off", retain=True)
        try:
            async with running(cfg) as (controller, actions, _):
                err = await obs.wait_for(f"{base}/error")
                assert "retained" in err.value["reason"] and err.value["topic"] == f"{base}/set/mode"
                assert controller.state.mode == "call" and actions.states == []
        finally:
            await obs.publish(f"{base}/set/mode", "", retain=True)  # clear it from the session broker


def mosquitto_pub(broker, *args: str) -> None:
    subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", *args], check=True, timeout=10)


async def test_a_retained_command_is_ignored_answered_once_with_how_to_clear_it_and_clearing_it_works(broker):
    """Issue #7: someone published set/mode (and a cmd) with the retain flag. ripieno never applies
    them; it answers each once, naming the mosquitto_pub line that removes it, and not again when a
    reconnect delivers it again; that line, run while ripieno listens, is no error either; the next
    start then sees nothing."""
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    stale = {f"{base}/set/mode": "off", f"{base}/set/variation": "0.9", f"{base}/cmd/reset": "PRESS"}
    for topic, payload in stale.items():
        mosquitto_pub(broker, "-r", "-t", topic, "-m", payload)
    try:
        async with Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
            async with running(cfg) as (controller, actions, _):
                await obs.wait(lambda: len(obs.on(f"{base}/error")) >= 3, what="an answer for each retained command")
                errors = {e.value["topic"]: e.value for e in obs.on(f"{base}/error")}
                assert set(errors) == set(stale)
                for topic, err in errors.items():
                    assert "retained" in err["reason"] and f"mosquitto_pub -r -n -t {topic}" in err["reason"], err
                    assert err["payload"] == stale[topic]
                # A reconnect delivers them again: kick ripieno's session (a client with its id takes over).
                online_before = len(obs.on(f"{base}/status"))
                opts = mqttmod.client_options(cfg, env={})
                async with aiomqtt.Client(broker.host, broker.port, identifier=opts["identifier"]):
                    pass
                await obs.wait(lambda: len([s for s in obs.on(f"{base}/status") if s.value == "online"]) > online_before,
                               timeout=15, what="ripieno back online after the kick")
                await asyncio.sleep(0.5)
                assert len(obs.on(f"{base}/error")) == 3, [e.value for e in obs.on(f"{base}/error")]
                assert controller.state.mode == "call" and controller.state.variation == 0.25
                assert actions.states == [] and actions.calls == []
                # The advice itself, for the set/ topics, while ripieno listens: no error, no change.
                mark = len(obs.seen)
                for topic in (f"{base}/set/mode", f"{base}/set/variation"):
                    mosquitto_pub(broker, "-r", "-n", "-t", topic)
                await asyncio.sleep(0.5)
                assert obs.on(f"{base}/error")[3:] == [] and actions.states == [], obs.seen[mark:]
            mosquitto_pub(broker, "-r", "-n", "-t", f"{base}/cmd/reset")  # (live, it would press reset once)
            mark = len(obs.seen)
            async with running(cfg) as (controller, actions, _):  # a restart: nothing retained is left
                await obs.wait_for(f"{base}/status", lambda v: v == "online", since=mark)
                await asyncio.sleep(0.5)
                assert [s for s in obs.seen[mark:] if s.topic == f"{base}/error"] == []
                assert actions.states == [] and actions.calls == []
    finally:
        for topic in stale:
            mosquitto_pub(broker, "-r", "-n", "-t", topic)


async def test_mosquitto_pub_oversized_payload_is_refused(broker, tmp_path):
    """The contract holds for other tools too: a 2 KiB payload from mosquitto_pub is refused."""
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    big = tmp_path / "big.txt"
    big.write_text("1" * 2048)
    async with running(cfg) as (controller, _, _), Observer(broker.host, broker.port, [f"{base}/error"]) as obs:
        await asyncio.sleep(0.2)
        before = controller.state
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
                        "-t", f"{base}/set/temperature", "-f", str(big)], check=True, timeout=10)
        err = await obs.wait_for(f"{base}/error")
        assert "2048 bytes" in err.value["reason"] and len(err.value["payload"]) == 200
        assert controller.state == before


async def test_a_flood_is_rate_limited_and_bounded(broker):
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    n = 300
    async with running(cfg) as (controller, actions, _), Observer(broker.host, broker.port, [f"{base}/error"]) as obs:
        await asyncio.sleep(0.2)
        await asyncio.gather(*(obs.publish(f"{base}/set/temperature", f"{0.1 + i / 1000:.3f}") for i in range(n)))
        stats = controller.stats
        await obs.wait(lambda: len(actions.states) + stats.commands_refused + stats.commands_dropped >= n,
                       what="every flooded command applied, refused or dropped")
        assert stats.commands_refused > 0
        assert len(actions.states) < n
        assert all("rate limit" in e.value["reason"] for e in obs.on(f"{base}/error"))
        assert len(obs.on(f"{base}/error")) <= stats.commands_refused


async def test_cc_goes_through_the_same_path_and_reaches_mqtt(broker):
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with running(cfg) as (controller, actions, _), Observer(broker.host, broker.port, [f"{base}/state"]) as obs:
        await obs.wait_for(f"{base}/state")
        mark = len(obs.seen)
        cmd = cc_command(cfg.midi.cc, 1, 127)  # mod wheel all the way up
        assert cmd is not None
        await controller.apply(*cmd)
        state = await obs.wait_for(f"{base}/state", lambda v: v["temperature"] == 2.0, since=mark)
        assert actions.states[-1].temperature == 2.0 and state.retain is False


async def test_metrics_are_published_and_moved_note_counts_refresh_state(broker):
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with running(cfg, metrics_interval=0.2) as (controller, _, _), Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        await obs.wait_for(f"{base}/state")
        controller.stats.notes_in, controller.stats.notes_out = 12, 7
        controller.stats.add_step(150.0)
        metrics = await obs.wait_for(f"{base}/metrics", lambda v: v["notes_in"] == 12)
        assert metrics.value["step_p50_us"] == 150.0 and metrics.value["notes_out"] == 7
        assert {"step_p99_us", "dropped", "uptime_s"} <= set(metrics.value)
        await obs.wait_for(f"{base}/state", lambda v: v["notes_in"] == 12 and v["notes_out"] == 7)


async def test_tempo_and_confidence_reach_state_when_they_move_not_on_every_reading(broker):
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with running(cfg) as (controller, actions, _), Observer(broker.host, broker.port, [f"{base}/state"]) as obs:
        first = await obs.wait_for(f"{base}/state")
        assert first.value["tempo_bpm"] is None and first.value["beat_confidence"] == 0.0
        mark = len(obs.seen)
        t = 100.0
        assert controller.report_tempo(120.0, 1.0, now=t)
        for k in range(1, 40):  # a clock's wobble, read four times a second for ten seconds
            controller.report_tempo(120.0 + 0.3 * (-1) ** k, 1.0, now=t + 0.25 * k)
        state = await obs.wait_for(f"{base}/state", lambda v: v["tempo_bpm"] == 120.0 and v["beat_confidence"] == 1.0, since=mark)
        assert state.retain is False  # live; a late subscriber gets it retained (below)
        controller.report_tempo(None, 0.0, now=t + 20)  # the clock stopped
        await obs.wait_for(f"{base}/state", lambda v: v["tempo_bpm"] is None and v["beat_confidence"] == 0.0, since=mark + 1)
        await asyncio.sleep(0.2)
        assert len(obs.seen) - mark == 2, [s.value for s in obs.seen[mark:]]
        assert actions.states == []
    async with Observer(broker.host, broker.port, [f"{base}/state"]) as late:
        retained = await late.wait_for(f"{base}/state")
        assert retained.retain and set(retained.value) == STATE_KEYS and retained.value["tempo_bpm"] is None


async def test_clean_exit_publishes_offline(broker):
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with Observer(broker.host, broker.port, [f"{base}/status"]) as obs:
        async with running(cfg):
            await obs.wait_for(f"{base}/status", lambda v: v == "online")
        await obs.wait_for(f"{base}/status", lambda v: v == "offline")
    async with Observer(broker.host, broker.port, [f"{base}/status"]) as late:  # and it stays retained
        seen = await late.wait_for(f"{base}/status")
        assert seen.value == "offline" and seen.retain


async def test_cancelled_on_shutdown_still_publishes_offline(broker):
    """A daemon may set stop and cancel the MQTT task at once: offline must still go out."""
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    stop = asyncio.Event()
    task = asyncio.create_task(mqttmod.run_mqtt(cfg, Controller(cfg, RecordingActions()), stop))
    async with Observer(broker.host, broker.port, [f"{base}/status"]) as obs:
        await obs.wait_for(f"{base}/status", lambda v: v == "online")
        stop.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        await obs.wait_for(f"{base}/status", lambda v: v == "offline")


async def test_stop_while_the_broker_is_unreachable_returns_promptly():
    cfg = mqtt_config("127.0.0.1", free_port())  # nobody listens here
    stop = asyncio.Event()
    task = asyncio.create_task(mqttmod.run_mqtt(cfg, Controller(cfg, RecordingActions()), stop))
    await asyncio.sleep(0.5)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, mqttmod.STOP_GRACE_S + 1)


async def test_instances_under_distinct_base_topics_do_not_interfere(broker):
    a = mqtt_config(broker.host, broker.port)
    b = mqtt_config(broker.host, broker.port)
    async with running(a) as (ca, _, _), running(b) as (cb, _, _):
        async with Observer(broker.host, broker.port, [f"{a.mqtt.base_topic}/#", f"{b.mqtt.base_topic}/#"]) as obs:
            await obs.wait_for(f"{b.mqtt.base_topic}/status", lambda v: v == "online")
            await obs.publish(f"{a.mqtt.base_topic}/set/mode", "off")
            await obs.wait_for(f"{a.mqtt.base_topic}/state", lambda v: v["mode"] == "off")
            assert cb.state.mode == "call" and ca.state.mode == "off"


def test_route_and_backoff_and_rate_limiter_are_pure():
    assert mqttmod.route("r", "r/set/mode") == "mode"
    assert mqttmod.route("r", "r/cmd/panic") == "panic"
    for bad in ("r/set/panic", "r/cmd/mode", "r/set", "rx/set/mode", "r/set/mode/x"):
        with pytest.raises(Exception, match="unknown topic"):
            mqttmod.route("r", bad)
    rng = random.Random(1)
    delays = [mqttmod.backoff_delay(a, rng) for a in range(40)]
    assert all(0 < d <= mqttmod.RETRY_CAP_S for d in delays)
    assert delays[0] <= mqttmod.RETRY_FIRST_S and max(delays) > mqttmod.RETRY_CAP_S / 2
    lim = mqttmod.RateLimiter(rate=2.0, burst=3)
    assert [lim.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow(0.5) and not lim.allow(0.5)


def test_password_comes_from_env_first_then_the_file_first_line(tmp_path):
    f = tmp_path / "pw"
    f.write_text("from-file\nsecond line\n")
    cfg = cfgmod.parse({"mqtt": {"username": "u", "password_file": str(f)}})
    assert mqttmod.read_password(cfg, {}) == "from-file"
    assert mqttmod.read_password(cfg, {"RIPIENO_MQTT_PASSWORD": "from-env"}) == "from-env"
    assert mqttmod.read_password(cfgmod.Config(), {}) is None


async def test_set_model_never_follows_a_symlink_out_of_models_dir(broker, tmp_path):
    """Issue #15: a symlink in models_dir to /etc/passwd was opened and parsed. A name now resolves
    inside models_dir or is no model at all (an error reply, nothing loaded); a link that stays
    inside still works."""
    models = tmp_path / "models"
    models.mkdir()
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"")
    (models / "evil.safetensors").symlink_to("/etc/passwd")
    (models / "away.safetensors").symlink_to(outside)
    (models / "real.safetensors").write_bytes(b"")
    (models / "alias.safetensors").symlink_to(models / "real.safetensors")
    cfg = mqtt_config(broker.host, broker.port, engine={"models_dir": str(models)})
    base = cfg.mqtt.base_topic
    async with running(cfg) as (_, actions, _), Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        await obs.wait_for(f"{base}/state")
        for name in ("evil", "away"):
            mark = len(obs.seen)
            await obs.publish(f"{base}/set/model", name)
            err = await obs.wait_for(f"{base}/error", since=mark)
            assert f"no model {name!r}" in err.value["reason"] and str(models) not in err.value["reason"], err.value
        await obs.publish(f"{base}/set/model", "alias")
        await obs.wait(lambda: actions.loaded, what="the link inside models_dir loaded")
        assert actions.loaded == [str(models / "real.safetensors")]


async def test_a_spoofed_status_or_state_is_corrected_at_once(broker):
    """Issue #15: `mosquitto_pub -r -t ripieno/status -m offline` made Home Assistant show ripieno
    offline while it played, until its next reconnect. ripieno now hears its own topics and puts
    the truth back."""
    cfg = mqtt_config(broker.host, broker.port)
    base = cfg.mqtt.base_topic
    async with running(cfg) as (controller, _, _), Observer(broker.host, broker.port, [f"{base}/#"]) as obs:
        await obs.wait_for(f"{base}/status", lambda v: v == "online")
        await obs.wait_for(f"{base}/state")
        for topic, lie, truth in ((f"{base}/status", "offline", lambda v: v == "online"),
                                  (f"{base}/state", '{"mode": "off"}', lambda v: v == json.loads(controller.state.to_json()))):
            mark = len(obs.seen)
            subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-r", "-q", "1", "-t", topic, "-m", lie], check=True, timeout=10)
            await obs.wait_for(topic, truth, since=mark + 1, timeout=5)  # live, after the lie
        async with Observer(broker.host, broker.port, [f"{base}/status", f"{base}/state"]) as late:  # what a newcomer sees
            assert (await late.wait_for(f"{base}/status")).value == "online"
            assert (await late.wait_for(f"{base}/state")).value == json.loads(controller.state.to_json())
