from pollybot_leads.domain.leads import fold, query_words, search_prefixes, search_terms


def test_terms_cover_name_words_and_email_parts():
    terms = search_terms("Jean-Luc Picard", "j.l.picard+crm@star-fleet.org")
    for term in ("jean-luc", "jean", "luc", "picard", "j", "l", "crm",
                 "j.l.picard+crm@star-fleet.org", "j.l.picard+crm", "star-fleet.org",
                 "star-fleet", "org"):
        assert term in terms, term


def test_folding_removes_case_and_accents():
    assert fold("ZOË Ångström") == "zoe angstrom"
    assert query_words("  Zoë,  ÅNG ") == ["zoe", "ang"]


def test_prefixes_are_bounded():
    prefixes = search_prefixes(["a" * 40])
    assert max(map(len, prefixes)) == 16 and "a" in prefixes
