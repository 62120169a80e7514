"""Fault injection for the whole platform (issue 18, "Nothing lost, nothing doubled").

`python -m chaos` (or `make chaos`) starts the platform on the embedded stack on free ports,
supervised as `crm up` supervises it, drives mixed traffic through the real HTTP APIs while
it kills and freezes the broker, the database and the services one after another, waits
until the platform is quiet and checks exactly that every accepted write is held once and
agrees everywhere. A tool, not product code: nothing in services/ imports it.
"""
