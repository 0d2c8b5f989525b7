"""What a sweep's trials amount to.

- `pareto`: the non-dominated front and its hypervolume
- `hv_history`: the hypervolume after each finished trial
- `report`: front.csv / json / png / txt and one-line configuration descriptions
- `menu`: a finished front as a menu (limits, pick, knee, the registry's aliases)
"""
