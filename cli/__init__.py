"""The ``checkout`` command (docs/contract.md, section 4), one module per group of commands:
:mod:`cli.orders`, :mod:`cli.accounts`, :mod:`cli.products`, :mod:`cli.admin`; what they share in
:mod:`cli.common`, everything they print in :mod:`cli.render`, the parser and the program in
:mod:`cli.main`."""
