"""Plans: what is done about the reason a customer gave for leaving.

A person resolving an alert with a reason opens the plan the policy's playbook holds for it
(one open per customer and reason); its owner marks it done or cancelled, and the plan shows
whether the customer came back after it opened.
"""
