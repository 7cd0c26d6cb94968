"""Data sources behind small protocols: carbon intensity and prices, live and bundled.

Only a provider knows its wire format and its client; it hands domain types upward and translates
its failures into `carbon_optimizer.errors`.
"""
