"""The third stage: alerts -> a Slack-compatible webhook, with retries and dead letters."""
