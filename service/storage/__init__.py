"""Storage: the SQLite database and the catalog rows in it, the artifact store and its key layout."""
