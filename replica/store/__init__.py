"""The replica store: the one package that holds SQL for the replica database.

``schema`` (DDL and its user_version ladder), ``connection`` (how every connection is
set up), ``writer`` (ingest's statements), ``reader`` (the API's named queries).
"""
