"""The demo: the embedded local stack (``python -m demo.stack``, ``checkout demo``) and the example
accounts and orders it runs (``accounts.json``, ``orders/``)."""
