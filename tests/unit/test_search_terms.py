from pollybot_leads.leads.rules import fold, prefix_upper_bound, query_words, search_terms


def test_terms_cover_name_words_and_email_parts():
    terms = search_terms("Jean-Luc Picard", "j.l.picard+crm@star-fleet.org")
    for term in (
        "jean-luc",
        "jean",
        "luc",
        "picard",
        "j",
        "l",
        "crm",
        "j.l.picard+crm@star-fleet.org",
        "j.l.picard+crm",
        "star-fleet.org",
        "star-fleet",
        "org",
    ):
        assert term in terms, term


def test_folding_removes_case_and_accents():
    assert fold("ZOË Ångström") == "zoe angstrom"
    assert query_words("  Zoë,  ÅNG ") == ["zoe", "ang"]


def test_prefix_bounds_enclose_exactly_the_words_that_start_with_the_prefix():
    upper = prefix_upper_bound("jo")
    assert upper == "jp"
    for word in ("jo", "john", "jo\U0010ffff", "joz"):
        assert "jo" <= word < upper
    for word in ("j", "jn\uffff", "jp", "k"):
        assert not ("jo" <= word < upper)
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff") is None


def test_ranges_intersect_to_the_tighter_bounds():
    from pollybot_leads.store.ranges import intersect_ranges

    assert intersect_ranges({"$gte": 5, "$lt": 9}, {"$gte": 3}) == {"$gte": 5, "$lt": 9}
    assert intersect_ranges({"$gte": 5, "$lt": 9}, {"$gte": 7}) == {"$gte": 7, "$lt": 9}
    assert intersect_ranges({"$lt": 9}, {"$lte": 8}) == {"$lte": 8}
    assert intersect_ranges({"$lte": 8}, {"$lt": 8}) == {"$lt": 8}
    assert intersect_ranges({"$gt": 1}, {"$gte": 1}) == {"$gt": 1}
    assert intersect_ranges({}, {"$gte": 2}) == {"$gte": 2}
