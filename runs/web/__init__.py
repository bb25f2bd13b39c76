"""The server-rendered pages: views, the page data they and the API share, URLs and template tags."""
