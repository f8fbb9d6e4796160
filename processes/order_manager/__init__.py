"""The OrderManager: validates, books, journals and acknowledges orders."""
