"""The MongoDB layer every feature stores through: the client, transaction sessions,
group commit, the embedded store, the store's quirks and the query shapes they choose
(plans, paging, walks, lookups), one adaptive window for every windowed reader, and the
indexes."""
