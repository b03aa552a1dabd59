"""The second stage: mentions -> per-ticker windows and baselines -> rules -> incidents -> alerts
(the ``aggregate-tickers`` agent and its changelog-backed state table)."""
