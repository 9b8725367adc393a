"""SOQL for the sandbox: a parser for the subset Salesforce clients send, and an engine that
translates parsed queries into SQLite SQL over the sandbox tables.

    engine = QueryEngine(conn, schema)
    query = engine.prepare("SELECT Id, Account.Name FROM Order WHERE Status = 'Activated'")
    page = query.fetch(query.ids()[:2000])
"""

from .ast import Query
from .engine import PreparedQuery, QueryEngine
from .parser import parse

__all__ = ["PreparedQuery", "Query", "QueryEngine", "parse"]
