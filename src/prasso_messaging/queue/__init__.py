"""Queue transport: the driver contract, one module per driver, and the worker loop.

Pure transport: it knows jobs and queues, never messages. The worker is handed its job handler.
"""
