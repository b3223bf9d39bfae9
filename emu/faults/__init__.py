"""Fault injection: the vocabulary of ``--fault`` specs and the plan that fires them."""
