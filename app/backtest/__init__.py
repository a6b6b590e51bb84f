"""`radar backtest`: what a policy would have raised on a purchase history, and how right it was.

`replay` runs the history through the service's own ingestion, alert evaluation and sweeper
in a throw-away database, with the clock following the events; `report` judges the alerts
against what the customers actually did next.
"""
