"""The pure core both controllers share: the API's names, plain values, decisions, custody,
status rendering, fault classification, tenancy policies and fair shares. No I/O here."""
