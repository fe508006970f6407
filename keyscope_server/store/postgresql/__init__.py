"""The PostgreSQL engine: several Keyscope servers on one shared database.

Its modules are imported where they are used (`keyscope_server.store.engines` imports the engine only for a
PostgreSQL URL), so that a server on SQLite never loads asyncpg."""
