"""What features use of the MongoDB driver, from one place: the store package is the only
code that imports pymongo (or motor), so a feature's queries name these instead."""

from pymongo import (
    ASCENDING,
    DESCENDING,
    DeleteOne,
    IndexModel,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from pymongo.write_concern import WriteConcern

__all__ = [
    "ASCENDING",
    "DESCENDING",
    "BulkWriteError",
    "DeleteOne",
    "DuplicateKeyError",
    "IndexModel",
    "PyMongoError",
    "ReturnDocument",
    "UpdateMany",
    "UpdateOne",
    "WriteConcern",
]
