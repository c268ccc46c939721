"""Moving a one-machine data dir onto the shared backends (``tdedge migrate``).

The data dir is read, never written: its SQLite files are copied byte for byte (with
their WAL) into a staging folder elsewhere and opened there (snapshot.py), so not even
the ``-wal`` and ``-shm`` files a reader would make appear in it. From the copies:

1. the lake's data files and the job results go to the object store (objects.py);
2. the lake's DuckLake catalog is copied row by row, every snapshot with it, into the
   PostgreSQL catalog, with the data path rewritten to the object store (catalog.py);
3. the control tables (accounts, keys, databases, jobs, the import ledger, retention
   rules, p13n configurations, services and tokens, bulk-import sessions) are copied
   into the PostgreSQL control database (control.py).

Each of 2 and 3 is one transaction. Step 3 comes last: a control database holding the
copy means the move is done, and a second run refuses it. A run interrupted before
then resumes: files already there with the same size are kept, and a catalog holding
exactly the source's snapshots is taken as copied (run.py).
"""
