"""Cost: EC2 prices (``prices``), each task's cost and waste (``estimate``), sums per user,
backend and month (``usage``) and monthly budgets (``budgets``).

A task is costed once, when it finishes, and the figures are stored on it
(``Task.cost``, ``Task.waste_cost``, ``Task.priced_with``) so that pages sum them in SQL.
"""
