"""The External Orders view: what the import loaded, quarantined and wrote back, inside the Airflow UI.

``plugin.py`` registers it with Airflow (the package's ``airflow.plugins`` entry point); the logic:
``queries`` (the warehouse reads behind each page), ``actions`` (the warehouse side of "retry
failed write-backs now"), ``app`` (the FastAPI app the api-server mounts) and ``mount`` (what the
plugin imports: kept free of heavy imports, since every Airflow process loads plugins).
"""
