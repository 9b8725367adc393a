"""The page templates (Jinja2). A package, so the ``*.html`` package data ships with a regular install."""
