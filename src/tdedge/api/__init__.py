"""Treasure Data's REST API (``/v3/…``) over tdedge's control plane, lake and job runner.

``door.py`` is the door; the other modules here answer one resource each.
"""
