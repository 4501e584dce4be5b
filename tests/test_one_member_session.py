"""OneMemberSession: an unpacked trial's session seen by the one training loop as a pack of one."""

from trainables.packing import OneMemberSession
from trainables.session import BareSession

# the LM's layout: the loop keeps a sampler per seed and a detector per member
LAYOUT = {"samplers": ("train_sampler", lambda samplers: samplers[7], lambda one: {7: one}),
          "detectors": ("detector", lambda detectors: detectors[0], lambda one: [one])}
LOOP_STATE = {"model": {"w": 1.0}, "samplers": {7: {"position": 3}}, "detectors": [{"spikes": 2}],
              "active": [True], "step": 4, "reports": 2}
UNPACKED_STATE = {"model": {"w": 1.0}, "train_sampler": {"position": 3}, "detector": {"spikes": 2}, "step": 4,
                  "reports": 2}


def test_member_zero_reports_to_the_session_with_its_status_and_the_unpacked_checkpoint():
    bare = BareSession()
    session = OneMemberSession(bare, layout=LAYOUT)
    session.report({0: {"loss": 2.5}}, statuses={}, state=None)
    session.report({0: {"loss": 1.5}}, statuses={0: "finished"}, state=lambda: LOOP_STATE)
    assert bare.reports == [{"loss": 2.5}, {"loss": 1.5}] and bare.status == "finished"
    assert bare.states == [UNPACKED_STATE]
    assert list(bare.states[0]) == list(UNPACKED_STATE)  # the keys in the order they had


def test_an_unpacked_checkpoint_restores_as_the_loops_state():
    session = OneMemberSession(BareSession(restore=UNPACKED_STATE), layout=LAYOUT)
    assert session.restored_state() == LOOP_STATE
    assert OneMemberSession(BareSession(), layout=LAYOUT).restored_state() is None


def test_checkpoint_cadence_is_the_sessions():
    session = OneMemberSession(BareSession(), layout=LAYOUT)
    assert [session.should_checkpoint(i, 2) for i in (1, 2, 3, 4)] == [False, True, False, True]
    assert not session.should_checkpoint(2, 0)
