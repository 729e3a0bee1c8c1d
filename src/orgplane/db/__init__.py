from orgplane.db.engine import Database, Tx

__all__ = ["Database", "Tx"]
