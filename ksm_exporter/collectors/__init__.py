"""Collectors: each reads its source once per scrape and renders families with pure
functions. They read state; they never change it."""
