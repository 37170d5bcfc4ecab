"""The findings rules, one module per family; ``findings.registry`` lists them.

Each module holds checks (``(Window) -> list[Finding]``) and, at its end, one ``Rule`` per
check naming the rule ids its findings carry and what each means.
"""
