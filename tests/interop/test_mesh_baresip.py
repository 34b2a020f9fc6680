"""Two stock baresip clients message and call each other across 4 mesh hops (issue 4).

Five namespaces in a chain (4 hops), every link dropping 10% of the frames it receives
(nftables, in the kernel), a ``meshcomm handset`` in each. baresip "alice" runs beside
node 0, "bob" beside node 4; each registers to its own node's gateway through an outbound
proxy setting, as a stock softphone would be configured.

* MESSAGE alice -> bob: bob receives it exactly once (one transaction in bob's SIP trace;
  retransmissions of the same transaction are absorbed by bob's transaction layer and are
  not a second delivery), alice gets 200 OK.
* A call alice -> bob (G.711, each side sends its own WAV test signal) is established,
  carries RTP both ways for 10 s, alice hangs up: BYE leaves alice and reaches bob, both
  report the call closed. What each side recorded correlates >= 0.9 with what the other
  side sent (blockwise alignment, see :mod:`tools.testbed.audio`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.envcheck import require_program, require_root
from tests.interop.clients import (
    DOMAIN,
    call_with_audio,
    final_statuses,
    requests_with,
    wait_binding,
)
from tools.testbed import Testbed, chain
from tools.testbed.audio import match, tone_glides, write_test_signal
from tools.testbed.baresip import BaresipClient
from tools.testbed.nodes import wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

N_NODES = 5
LOSS_PERCENT = 10
#: Bindings of both clients known at both ends within this.
CONVERGE_S = 30.0
REGISTER_S = 10.0
MESSAGE_ANSWER_S = 30.0
#: After the 200, watch this long for a duplicate delivery.
DUPLICATE_WATCH_S = 3.0
CALL_SETUP_S = 20.0
CALL_S = 10.0
HANGUP_S = 15.0
#: The WAV outlasts the call (baresip hangs up by itself at the end of its source file).
SIGNAL_S = CALL_S + 8.0
MIN_CORRELATION = 0.9
#: At least this much of the call must have been recorded at each end.
MIN_RECORDED_S = CALL_S - 1.5
ALICE_SEED, BOB_SEED = 1001, 2002


@dataclass
class Bed:
    tb: Testbed
    alice: BaresipClient
    bob: BaresipClient
    alice_signal: list[int]
    bob_signal: list[int]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    require_root()
    require_program("baresip", "baresip-core")
    work = tmp_path_factory.mktemp("mesh-baresip")
    with chain(N_NODES) as tb:
        tb.use_workdir(work)
        tb.set_loss_everywhere(LOSS_PERCENT)
        for i in range(N_NODES):
            tb.start_node(i, name=f"n{i}")
        alice_signal = write_test_signal(work / "alice.wav", ALICE_SEED, SIGNAL_S)
        bob_signal = write_test_signal(work / "bob.wav", BOB_SEED, SIGNAL_S)
        alice = tb.start_baresip(0, "alice", audio_in=work / "alice.wav",
                                 contacts=[f"sip:bob@{DOMAIN}"])
        bob = tb.start_baresip(N_NODES - 1, "bob", audio_in=work / "bob.wav",
                               contacts=[f"sip:alice@{DOMAIN}"])
        registered = wait_until(lambda: alice.registered() and bob.registered(), REGISTER_S)
        assert registered is not None, "REGISTER to the node's gateway failed\n" + tb.describe()
        for node, aor in ((0, f"sip:bob@{DOMAIN}"), (N_NODES - 1, f"sip:alice@{DOMAIN}")):
            took = wait_binding(tb, node, aor, CONVERGE_S)
            assert took is not None, f"node {node} never listed {aor}\n" + tb.describe()
        yield Bed(tb, alice, bob, alice_signal, bob_signal)


def test_message_delivered_once_with_200(bed: Bed) -> None:
    text = f"mesh-message-{secrets.token_hex(6)}"
    bed.alice.message(f"sip:bob@{DOMAIN}", text)
    sent = wait_until(lambda: bool(requests_with(bed.alice, "MESSAGE", sent=True,
                                                 body_has=text)), 5.0)
    assert sent is not None, "alice did not send the MESSAGE\n" + bed.alice.log_tail()
    call_id = requests_with(bed.alice, "MESSAGE", sent=True, body_has=text)[0].headers["call-id"]
    answered = wait_until(lambda: bool(final_statuses(bed.alice, call_id, "MESSAGE",
                                                      sent=False)), MESSAGE_ANSWER_S)
    assert answered is not None, "no final response to alice's MESSAGE\n" + bed.tb.describe()
    assert final_statuses(bed.alice, call_id, "MESSAGE", sent=False)[0] == 200, \
        bed.alice.log_tail()
    time.sleep(DUPLICATE_WATCH_S)  # a duplicate would come as a second transaction
    delivered = requests_with(bed.bob, "MESSAGE", sent=False, body_has=text)
    transactions = {m.branch for m in delivered}
    print(f"\nMESSAGE over {N_NODES - 1} hops, {LOSS_PERCENT}% loss: bob saw {len(delivered)} "
          f"copies in {len(transactions)} transaction(s); alice got "
          f"{final_statuses(bed.alice, call_id, 'MESSAGE', sent=False)}")
    assert len(transactions) == 1, f"delivered {len(transactions)} times\n{bed.bob.log_tail()}"
    bob_call_id = delivered[0].headers["call-id"]
    assert 200 in final_statuses(bed.bob, bob_call_id, "MESSAGE", sent=True)


def test_call_carries_audio_both_ways_and_ends_with_bye(bed: Bed) -> None:
    got = call_with_audio(bed.tb, bed.alice, bed.bob, bed.alice_signal, bed.bob_signal,
                          setup_s=CALL_SETUP_S, call_s=CALL_S, hangup_s=HANGUP_S)
    print(f"\ncall over {N_NODES - 1} hops, {LOSS_PERCENT}% loss: set up in {got.setup_s:.2f} "
          f"s; bob heard alice {got.at_callee}; alice heard bob {got.at_caller}")
    got.check(MIN_RECORDED_S, MIN_CORRELATION)


def test_the_correlation_check_can_fail() -> None:
    """A recording of the other side's signal (or of a shifted copy of parts) is told apart."""
    alice, bob = tone_glides(ALICE_SEED, 3.0), tone_glides(BOB_SEED, 3.0)
    assert match(bob, alice[:8000]).correlation < MIN_CORRELATION / 2
    shifted = alice[800:4800] + alice[6000:10000]  # two blocks, one frame-aligned gap
    assert match(alice, shifted).correlation > 0.99


def test_a_frame_lost_inside_a_block_costs_only_that_frame() -> None:
    """Frames lost in the middle of blocks (a late packet concealed) shift the rest of the
    recording; the check aligns such a block in halves, so five losses in ten seconds do
    not read as bad audio, while a recording of the wrong signal still does."""
    alice, bob = tone_glides(ALICE_SEED, 12.0), tone_glides(BOB_SEED, 12.0)
    recording, at = [], 0
    for lost_at in (6000, 22000, 38000, 54000, 70000):   # mid-block, 2 s apart
        recording += alice[at:lost_at]
        at = lost_at + 160                              # one 20 ms frame gone
    recording += alice[at:88000]
    got = match(alice, recording)
    assert got.correlation > 0.97 and got.lag_changes == 5
    mixed = recording[:40000] + bob[40000:88000]        # the second half is someone else
    assert match(alice, mixed).correlation < MIN_CORRELATION
