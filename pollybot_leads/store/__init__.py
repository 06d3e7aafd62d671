"""The MongoDB layer every feature stores through: the client, transaction sessions,
group commit, the embedded SecantusDB, store quirks and the indexes."""
