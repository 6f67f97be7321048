"""Helpers the tests share: stores with history, scenarios, racing writers, a real server."""
