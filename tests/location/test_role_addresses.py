"""Role addresses under the agency policy (issue 12 point 3): the credential's role is
checked against the role-address table, one key holds a role address, and it passes to
another key only by a signed hand-over carried in the new holder's binding."""

from __future__ import annotations

from meshcomm.location.table import BindingState, MergeOutcome, TrustMode
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.roles import pack_trust_bundle, sign_handover
from tests.location.helpers import AGENCY, ALICE, BOB, CAROL, WALL, binding, table

OPS = "sip:ops-chief@fire.example"
IC = "sip:incident-commander@fire.example"


def cred(device: Identity, role: str) -> bytes:
    return issue_credential(AGENCY, aor_pattern="sip:*@fire.example", role=role,
                            device_key=device.public_key, issued_at=int(WALL) - 10,
                            expires_at=int(WALL) + 3600).to_bytes()


def agency_table():  # type: ignore[no-untyped-def]
    return table(TrustMode.AGENCY, frozenset({AGENCY.public_key}))


def test_medic_credential_cannot_claim_a_command_address() -> None:
    t = agency_table()
    medic = cred(ALICE, "medic")
    refused = t.offer(binding(ALICE, 1, aor=IC, credential=medic), 0.0, WALL)
    assert refused.outcome is MergeOutcome.REJECTED and refused.reason == "role_scope"
    assert t.trust_reason(IC, ALICE.public_key, medic, WALL) == "role_scope"
    # the same credential still covers an ordinary address of its pattern
    ok = t.offer(binding(ALICE, 2, aor="sip:alice@fire.example", credential=medic), 0.0, WALL)
    assert ok.outcome is MergeOutcome.NEW
    # a command credential may hold it
    cmd = t.offer(binding(BOB, 1, aor=IC, credential=cred(BOB, "command")), 0.0, WALL)
    assert cmd.outcome is MergeOutcome.NEW and [s.binding.key for s in t.lookup(IC)] == [
        BOB.public_key]


def test_second_holder_without_handover_is_a_conflict() -> None:
    t = agency_table()
    t.offer(binding(ALICE, 1, aor=OPS, credential=cred(ALICE, "command")), 0.0, WALL)
    second = t.offer(binding(BOB, 1, aor=OPS, credential=cred(BOB, "command")), 1.0, WALL)
    assert second.outcome is MergeOutcome.NEW
    assert second.stored is not None and second.stored.state is BindingState.CONFLICT
    assert [s.binding.key for s in t.lookup(OPS)] == [ALICE.public_key]


def handed(signer: Identity, to: Identity, at: int) -> bytes:
    return pack_trust_bundle(cred(to, "command"),
                             sign_handover(signer, aor=OPS, new_key=to.public_key, from_time=at))


def test_signed_handover_moves_the_address_in_any_order_of_arrival() -> None:
    old = binding(ALICE, 1, aor=OPS, credential=cred(ALICE, "command"))
    new = binding(BOB, 1, aor=OPS, credential=handed(ALICE, BOB, int(WALL)))
    t = agency_table()
    t.offer(old, 0.0, WALL)
    assert t.offer(new, 1.0, WALL).outcome is MergeOutcome.NEW
    assert [s.binding.key for s in t.lookup(OPS)] == [BOB.public_key]
    assert t.role_holder(OPS) is not None and t.role_holder(OPS).handover_from == int(WALL)
    # a node that sees the new holder first refuses it until the old holder's binding is
    # there (anti-entropy offers it again), then reaches the same holder
    late = agency_table()
    assert late.offer(new, 0.0, WALL).reason == "handover_signer"
    late.offer(old, 1.0, WALL)
    late.offer(new, 2.0, WALL)
    assert [s.binding.key for s in late.lookup(OPS)] == [BOB.public_key]


def test_handover_signed_by_an_agency_key_needs_no_holder() -> None:
    t = agency_table()
    result = t.offer(binding(BOB, 1, aor=OPS, credential=handed(AGENCY, BOB, int(WALL))),
                     0.0, WALL)
    assert result.outcome is MergeOutcome.NEW and result.stored is not None
    assert result.stored.handover_from == int(WALL)


def test_forged_or_misdirected_handovers_are_refused() -> None:
    t = agency_table()
    t.offer(binding(ALICE, 1, aor=OPS, credential=cred(ALICE, "command")), 0.0, WALL)
    # signed by a key that holds nothing here (Carol is no claim on the address)
    rogue = t.offer(binding(BOB, 1, aor=OPS, credential=handed(CAROL, BOB, int(WALL))),
                    0.0, WALL)
    assert rogue.reason == "handover_signer"
    # a hand-over naming Bob does not carry Carol to the address
    stolen = pack_trust_bundle(cred(CAROL, "command"),
                               sign_handover(ALICE, aor=OPS, new_key=BOB.public_key,
                                             from_time=int(WALL)))
    assert t.offer(binding(CAROL, 1, aor=OPS, credential=stolen), 0.0, WALL).reason == (
        "bad_handover")
    # a hand-over does not lift the role check: a medic stays off the address
    medic = pack_trust_bundle(cred(CAROL, "medic"), sign_handover(
        ALICE, aor=OPS, new_key=CAROL.public_key, from_time=int(WALL)))
    assert t.offer(binding(CAROL, 2, aor=OPS, credential=medic), 0.0, WALL).reason == (
        "role_scope")
    # a tampered signature
    good = sign_handover(ALICE, aor=OPS, new_key=BOB.public_key, from_time=int(WALL))
    bad_sig = bytes(good.signature[:-1]) + bytes([good.signature[-1] ^ 1])
    forged = pack_trust_bundle(cred(BOB, "command"), type(good)(
        good.aor, good.new_key, good.from_time, good.signer_key, good.signed_bytes, bad_sig))
    assert t.offer(binding(BOB, 2, aor=OPS, credential=forged), 0.0, WALL).reason == (
        "bad_handover")
    assert [s.binding.key for s in t.lookup(OPS)] == [ALICE.public_key]


def test_open_policy_keeps_role_addresses_first_come() -> None:
    t = table()
    assert t.offer(binding(ALICE, 1, aor=OPS), 0.0, WALL).outcome is MergeOutcome.NEW
    assert [s.binding.key for s in t.lookup(OPS)] == [ALICE.public_key]


def test_only_the_current_holder_may_hand_over() -> None:
    """A losing claimant (a second command credential on the address, in conflict) and a
    holder that already handed the address on sign hand-overs that move nothing."""
    t = agency_table()
    t.offer(binding(ALICE, 1, aor=OPS, credential=cred(ALICE, "command")), 0.0, WALL)
    loser = t.offer(binding(CAROL, 1, aor=OPS, credential=cred(CAROL, "command")), 1.0, WALL)
    assert loser.stored is not None and loser.stored.state is BindingState.CONFLICT
    by_loser = t.offer(binding(BOB, 1, aor=OPS, credential=handed(CAROL, BOB, int(WALL))),
                       2.0, WALL)
    assert by_loser.reason == "handover_signer"
    assert t.role_holder(OPS) is not None and t.role_holder(OPS).binding.key == ALICE.public_key
    # Alice hands it to Bob; then Alice (no longer the holder) tries to hand it to Carol
    assert t.offer(binding(BOB, 2, aor=OPS, credential=handed(ALICE, BOB, int(WALL))), 3.0,
                   WALL).outcome is MergeOutcome.NEW
    again = t.offer(binding(CAROL, 2, aor=OPS, credential=handed(ALICE, CAROL, int(WALL) + 5)),
                    4.0, WALL)
    assert again.reason == "handover_signer"
    assert t.role_holder(OPS) is not None and t.role_holder(OPS).binding.key == BOB.public_key
    # Bob, the holder now, may pass it on
    assert t.offer(binding(CAROL, 3, aor=OPS, credential=pack_trust_bundle(
        cred(CAROL, "command"), sign_handover(BOB, aor=OPS, new_key=CAROL.public_key,
                                               from_time=int(WALL) + 6))), 5.0,
        WALL).outcome is MergeOutcome.UPDATED        # Carol's earlier claim, now holding
    assert t.role_holder(OPS) is not None and t.role_holder(OPS).binding.key == CAROL.public_key


def test_a_holder_by_hand_over_keeps_it_when_refreshing_after_the_old_claim_is_gone() -> None:
    t = agency_table()
    old = binding(ALICE, 1, aor=OPS, credential=cred(ALICE, "command"))
    t.offer(old, 0.0, WALL)
    t.offer(binding(BOB, 1, aor=OPS, credential=handed(ALICE, BOB, int(WALL))), 1.0, WALL)
    # Alice de-registers (tombstone); Bob's refresh with the same hand-over still holds
    t.offer(binding(ALICE, 2, aor=OPS, credential=cred(ALICE, "command"), lifetime_s=0,
                    hold_s=60),
            2.0, WALL)
    refresh = t.offer(binding(BOB, 2, aor=OPS, credential=handed(ALICE, BOB, int(WALL))),
                      3.0, WALL)
    assert refresh.reason == "", refresh
    assert [s.binding.key for s in t.lookup(OPS)] == [BOB.public_key]
