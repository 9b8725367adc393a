"""Salesforce's Pub/Sub API interface (``pubsub_api.proto``, service ``eventbus.v1.PubSub``) and the
Python modules generated from it (``make proto``; committed, so nothing compiles at run time).

The proto file is Salesforce's public interface, from github.com/forcedotcom/pub-sub-api (CC0).
Both the event trigger (a client) and the sandbox (a server) use these modules.
"""
