"""All persistence of metadata: tables, the Store API, the execution queue, migrations."""
