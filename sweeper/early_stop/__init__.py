"""early_stop"""
