"""The Streamlit console: the app (``app``), one view per page (``views/``), sign-in and
roles (``auth``), every admin action through the job API (``actions``) and the reads behind
the pages (``data``). See docs/components.md."""
