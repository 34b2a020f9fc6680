"""Conventional SIP beyond the mesh (issue 10 item 5): kamailio as the upstream registrar and
proxy of an island.

Two namespaces in a chain. Node 0 runs ``meshcomm relay`` with its uplink on ``lo``
(``--uplink lo``; a ``meshcomm dht-node`` on 127.0.0.1 is its DHT peer, so the uplink
comes up) and ``[upstream] registrar = "sip:127.0.0.1:5070"`` with digest credentials from
a password file; kamailio runs there too (registrar + usrloc in memory, ``auth`` with one
fixed password through ``pv_www_authenticate``, no database), and so does the desk phone, a
SIPp UA registered at kamailio as ``sip:desk@incident.local``. Node 1 runs a handset with
baresip "medic" registered at its node's gateway (auto-answer).

* The relay registers the island's AoRs at kamailio (answering its digest challenge):
  ``ctl status`` shows ``upstream`` reachable with the relay's, the handset's and medic's
  AoRs registered.
* MESSAGE desk -> medic through kamailio and the relay: 200 back at SIPp, medic got it.
* MESSAGE medic -> desk: the handset's gateway finds no binding in the island or the DHT,
  the relay forwards it to kamailio, which delivers it to SIPp: 200 back at medic.
* A call desk -> medic (SIPp UAC, baresip auto-answers) with ACK and BYE, and a call
  medic -> desk (baresip dials, SIPp UAS answers, medic hangs up: BYE answered 200).
* kamailio stopped: a new AoR's REGISTER goes unanswered, a message inside the island is
  still delivered, and the relay reports the registrar unreachable after Timer F.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.envcheck import require_program, require_root
from tests.interop.clients import DOMAIN, final_statuses, requests_with, wait_or_kill
from tools.testbed import Testbed, chain
from tools.testbed.audio import write_test_signal
from tools.testbed.baresip import BaresipClient
from tools.testbed.nodes import REPO, MeshProcess, ctl_argv, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

SCENARIOS: Final = Path(__file__).resolve().parent / "scenarios"
KAMAILIO_PORT: Final = 5070
#: The desk phone's registered contact port (its UAS runs there) and its UAC's port.
DESK_PORT, DESK_UAC_PORT = 5080, 5084
DHT_NODE_PORT, RELAY_DHT_PORT = 4300, 4310
DIGEST_USER: Final = "meshcomm"
SIPP_TIMEOUT_S: Final = 60.0
READY_S: Final = 60.0
CALL_SETUP_S: Final = 30.0
HANGUP_S: Final = 15.0
#: The signal medic sends in calls (longer than any call here: baresip hangs up at its end).
SIGNAL_S: Final = 60.0
MEDIC_SEED: Final = 4242

KAMAILIO_CFG: Final = """#!KAMAILIO
# The upstream registrar/proxy of tests/interop/test_upstream_kamailio.py: registrar and
# usrloc in memory, digest auth with one fixed password (no database), stateful relay.
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:{port}
auto_aliases=no
mpath="{modules}"

loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)

request_route {{
    xlog("L_INFO", "$rm $ru to $tu from $si:$sp\\n");
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{ t_check_trans(); exit; }}
        t_check_trans();
    }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    remove_hf("Route");
    if (is_method("INVITE|SUBSCRIBE")) {{ record_route(); }}
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("$td", "{password}", "0")) {{
            www_challenge("$td", "1");
            exit;
        }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""


def _kamailio_modules() -> str:
    for path in ("/usr/lib/x86_64-linux-gnu/kamailio/modules",
                 "/usr/lib/aarch64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules"):
        if Path(path, "registrar.so").exists():
            return path + "/"
    pytest.fail("kamailio is installed but its modules directory was not found")


@dataclass
class Bed:
    tb: Testbed
    relay: MeshProcess
    handset: MeshProcess
    medic: BaresipClient
    password: str
    kamailio_log: Path
    kamailio: subprocess.Popen[bytes]


@dataclass
class Sipp:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    messages: Path

    def wait(self, timeout_s: float = SIPP_TIMEOUT_S) -> int:
        return wait_or_kill(self.proc, timeout_s)

    def describe(self) -> str:
        def tail(path: Path, chars: int) -> str:
            try:
                return path.read_text(errors="replace")[-chars:]
            except FileNotFoundError:
                return ""
        return (f"--- sipp {self.name} exit {self.proc.poll()}\n{tail(self.log, 2000)}\n"
                f"[messages]\n{tail(self.messages, 5000)}")


def start_sipp(tb: Testbed, scenario: str, *, service: str, port: int,
               extra: tuple[str, ...] = ()) -> Sipp:
    """SIPp in node 0 against kamailio (127.0.0.1:KAMAILIO_PORT)."""
    stem = f"sipp-{scenario}-{port}-{secrets.token_hex(2)}"
    log, messages = tb.workdir / f"{stem}.out", tb.workdir / f"{stem}.messages"
    argv = ["sipp", f"127.0.0.1:{KAMAILIO_PORT}", "-sf", str(SCENARIOS / f"{scenario}.xml"),
            "-s", service, "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-mp",
            str(port + 2), "-nostdin", "-timeout", f"{int(SIPP_TIMEOUT_S)}s",
            "-trace_msg", "-message_file", str(messages), *extra]
    with log.open("wb") as out:
        proc = tb.popen(0, argv, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT)
    return Sipp(scenario, proc, log, messages)


def _passed(run: Sipp, bed: Bed) -> None:
    code = run.wait()
    assert code == 0, (f"{run.describe()}\n{_kamailio_tail(bed)}\n{bed.tb.describe()}")


def _kamailio_tail(bed: Bed) -> str:
    text = bed.kamailio_log.read_text(errors="replace") if bed.kamailio_log.exists() else ""
    return "--- kamailio\n" + "\n".join(text.splitlines()[-40:])


def _status(tb: Testbed, node: MeshProcess) -> dict[str, Any]:
    out = tb.run(node.index, ctl_argv(node, "status", "--json", timeout_s=10.0))
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def _upstream_ready(tb: Testbed, relay: MeshProcess, wanted: int) -> bool:
    status = _status(tb, relay)
    upstream, uplink = status.get("upstream") or {}, status.get("uplink") or {}
    return (upstream.get("state") == "reachable" and upstream.get("registered", 0) >= wanted
            and uplink.get("state") == "up")


def _start_kamailio(tb: Testbed, work: Path,
                    password: str) -> tuple[subprocess.Popen[bytes], Path]:
    cfg, log = work / "kamailio.cfg", work / "kamailio.log"
    cfg.write_text(KAMAILIO_CFG.format(port=KAMAILIO_PORT, password=password,
                                       modules=_kamailio_modules()))
    run_dir = work / "kamailio-run"
    run_dir.mkdir()
    with log.open("wb") as out:
        proc = tb.popen(0, ["kamailio", "-f", str(cfg), "-DD", "-E", "-P",
                            str(run_dir / "kamailio.pid"), "-Y", str(run_dir)],
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
    return proc, log


def _start_relay(tb: Testbed, work: Path, password: str) -> MeshProcess:
    with (work / "dht-node.log").open("wb") as log:
        tb.popen(0, [sys.executable, "-m", "meshcomm.cli.main", "dht-node", "--listen",
                     f"127.0.0.1:{DHT_NODE_PORT}", "--data-dir", str(work / "dht-node")],
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
    secret = work / "upstream.password"
    secret.write_text(password + "\n")
    os.chmod(secret, 0o600)
    args = ["--uplink", "lo", "--dht-bootstrap", f"127.0.0.1:{DHT_NODE_PORT}",
            "--dht-port", str(RELAY_DHT_PORT), "--set", "uplink.up_stable_s=1",
            "--set", f'upstream.registrar="sip:127.0.0.1:{KAMAILIO_PORT}"',
            "--set", f'upstream.username="{DIGEST_USER}"',
            "--set", f'upstream.password_file="{secret}"',
            "--set", "upstream.expires_s=120"]
    return tb.start_node(0, role="relay", name="relay", extra_args=args)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    require_root()
    require_program("sipp", "sip-tester")
    require_program("baresip", "baresip-core")
    require_program("kamailio", "kamailio")
    work = tmp_path_factory.mktemp("upstream-kamailio")
    password = secrets.token_hex(12)
    with chain(2) as tb:
        tb.use_workdir(work)
        kamailio, kamailio_log = _start_kamailio(tb, work, password)
        relay = _start_relay(tb, work, password)
        handset = tb.start_node(1, name="h1")
        # baresip's sine source does not run at 8 kHz: it sends a test signal file.
        signal = work / "medic.wav"
        write_test_signal(signal, MEDIC_SEED, SIGNAL_S)
        medic = tb.start_baresip(1, "medic", audio_in=signal,
                                 contacts=(f"sip:desk@{DOMAIN}",))
        bed = Bed(tb, relay, handset, medic, password, kamailio_log, kamailio)
        desk = start_sipp(tb, "upstream_register", service="desk", port=DESK_PORT,
                          extra=("-au", "desk", "-ap", password))
        _passed(desk, bed)
        # The relay's, the handset's and medic's AoRs registered at kamailio.
        took = wait_until(lambda: _upstream_ready(tb, relay, 3), READY_S)
        assert took is not None, (f"{_status(tb, relay).get('upstream')}\n"
                                  f"{_kamailio_tail(bed)}\n{tb.describe()}")
        print(f"\nupstream: 3 AoRs registered at kamailio {took:.1f} s after start")
        yield bed


def test_the_relay_registers_the_island_at_kamailio(bed: Bed) -> None:
    upstream = _status(bed.tb, bed.relay)["upstream"]
    assert upstream["state"] == "reachable" and upstream["last_error"] == ""
    assert upstream["registered"] >= 3 and upstream["wanted"] >= 3
    counters = upstream["counters"]
    assert counters.get("upstream_challenges", 0) >= 3          # each AoR answered one
    assert counters.get("upstream_auth_failed", 0) == 0
    log = bed.kamailio_log.read_text(errors="replace")
    for user in ("relay", "h1", "medic"):
        assert f"REGISTER sip:127.0.0.1:{KAMAILIO_PORT} to sip:{user}@{DOMAIN} from" in log
    assert bed.password not in json.dumps(upstream)
    assert bed.password not in bed.relay.log_tail(400)


def test_desk_phone_messages_the_responder(bed: Bed) -> None:
    mark = len(requests_with(bed.medic, "MESSAGE", sent=False, body_has="sipp message"))
    uac = start_sipp(bed.tb, "upstream_message_uac", service="medic", port=DESK_UAC_PORT)
    _passed(uac, bed)
    got = requests_with(bed.medic, "MESSAGE", sent=False, body_has="sipp message")
    assert len(got) == mark + 1, bed.medic.log_tail()
    assert "desk@" in got[-1].headers.get("from", "")
    # RFC 3325: the upstream is outside the trust domain by default; its PAI went at the relay
    assert "p-asserted-identity" not in got[-1].headers, got[-1].headers
    assert _status(bed.tb, bed.relay)["sip"]["counters"].get("upstream_identity_stripped", 0) >= 1


def test_responder_messages_the_desk_phone(bed: Bed) -> None:
    uas = start_sipp(bed.tb, "message_uas", service="desk", port=DESK_PORT)
    time.sleep(0.5)                                  # SIPp listening on the desk's contact
    text = f"to the desk {secrets.token_hex(4)}"
    bed.medic.message(f"sip:desk@{DOMAIN}", text)
    _passed(uas, bed)
    sent = requests_with(bed.medic, "MESSAGE", sent=True, body_has=text)
    assert sent, bed.medic.log_tail()
    call_id = sent[-1].headers["call-id"]
    assert wait_until(lambda: 200 in final_statuses(bed.medic, call_id, "MESSAGE",
                                                    sent=False), 10.0) is not None, (
        bed.medic.log_tail())


def test_desk_phone_calls_the_responder(bed: Bed) -> None:
    mark = len(bed.medic.events)
    uac = start_sipp(bed.tb, "upstream_invite_uac", service="medic", port=DESK_UAC_PORT)
    bed.medic.wait_event("CALL_ESTABLISHED", CALL_SETUP_S, after=mark)
    _passed(uac, bed)                      # 200 for the INVITE, ACK, BYE, 200 for the BYE
    bed.medic.wait_event("CALL_CLOSED", HANGUP_S, after=mark)
    bye = requests_with(bed.medic, "BYE", sent=False)
    assert bye and 200 in final_statuses(bed.medic, bye[-1].headers["call-id"], "BYE",
                                         sent=True)


def test_responder_calls_the_desk_phone(bed: Bed) -> None:
    uas = start_sipp(bed.tb, "invite_uas", service="desk", port=DESK_PORT)
    time.sleep(0.5)
    mark = len(bed.medic.events)
    bed.medic.dial(f"sip:desk@{DOMAIN}")
    bed.medic.wait_event("CALL_ESTABLISHED", CALL_SETUP_S, after=mark)
    invite = requests_with(bed.medic, "INVITE", sent=True)[-1]
    call_id = invite.headers["call-id"]
    time.sleep(2.0)
    bed.medic.hangup()
    bed.medic.wait_event("CALL_CLOSED", HANGUP_S, after=mark)
    _passed(uas, bed)                      # SIPp got the ACK and the BYE and answered 200
    assert wait_until(lambda: 200 in final_statuses(bed.medic, call_id, "BYE", sent=False),
                      HANGUP_S) is not None, bed.medic.log_tail()


#: Timer F (32 s) of the REGISTER that finds kamailio gone, plus the scan and slack.
UNREACHABLE_S: Final = 50.0
LATE_PORT: Final = 5090


def test_the_island_keeps_working_when_kamailio_is_gone(bed: Bed) -> None:
    """Last (it stops kamailio): a new AoR in the island sends a REGISTER that is never
    answered; meanwhile messages inside the island are delivered as ever, and the relay
    reports the registrar unreachable."""
    bed.kamailio.terminate()
    bed.kamailio.wait(timeout=10)
    late = bed.tb.popen(1, ["sipp", f"127.0.0.1:{bed.handset.sip_port}", "-sf",
                            str(SCENARIOS / "register.xml"), "-s", "late", "-i", "127.0.0.1",
                            "-p", str(LATE_PORT), "-m", "1", "-nostdin", "-timeout", "30s"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    assert late.wait(timeout=40) == 0
    mark = len(requests_with(bed.medic, "MESSAGE", sent=False))
    text = f"island only {secrets.token_hex(4)}"
    out = bed.tb.run(0, ctl_argv(bed.relay, "send", f"sip:medic@{DOMAIN}", text, "--json",
                                 timeout_s=20.0), check=False)
    reply = json.loads(out)
    assert reply["status"] == "delivered", reply
    assert len(requests_with(bed.medic, "MESSAGE", sent=False)) > mark
    took = wait_until(lambda: (_status(bed.tb, bed.relay)["upstream"] or {}).get("state")
                      == "unreachable", UNREACHABLE_S)
    upstream = _status(bed.tb, bed.relay)["upstream"]
    assert took is not None, upstream
    assert upstream["last_error"] == "no answer from the registrar"
    assert upstream["counters"].get("upstream_timeouts", 0) >= 1
    print(f"\nkamailio gone: upstream unreachable after {took:.1f} s; island message "
          "delivered meanwhile")
