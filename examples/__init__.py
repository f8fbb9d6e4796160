"""Example strategies: each file is one Strategy a user could copy and start from.

    python main.py --set strategy.class=examples.sentiment:SentimentOnly
    python main.py --set strategy.class=examples.reply_aware:Breakout
"""
