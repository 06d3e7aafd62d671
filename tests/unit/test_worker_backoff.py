"""The webhook worker's pause after store errors: it grows while they last."""

from pollybot_leads.webhooks.delivery import Backoff


def test_the_pause_doubles_with_each_failure_in_a_row_and_starts_over_after_a_success():
    backoff = Backoff(first=1.0, most=16.0)
    assert [backoff.failed() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    backoff.succeeded()
    assert backoff.failed() == 1.0
