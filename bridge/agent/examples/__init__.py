"""Agents to start from: each is a module with a `create(context)` factory for
`BRIDGE_AGENT_KIND=python:bridge.agent.examples.<module>:create`."""
