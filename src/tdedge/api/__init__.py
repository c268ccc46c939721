"""Treasure Data's REST API (``/v3/…``) over tdedge's control plane, lake and job runner.

``edge/restapi.py`` is the door; the modules here answer one resource each.
"""
