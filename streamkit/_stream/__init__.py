"""The stream core behind :class:`streamkit.Stream`; private, one job per module.

- ``channel``: the bounded batch channel and its end-once terminal record
  (a send end and a receive end over one shared state);
- ``chanstate``: that shared state, its lock and how threads wait on it;
- ``delivery``: the record of what was delivered (text, tool calls, timing);
- ``deadlines``: timeouts by phase (connect, first_token, idle, total);
- ``replay``: the comparator that checks a replayed stream after a cut;
- ``routing``: where each attempt goes (``Route``, ``FixedRoute``, the host router);
- ``worker``: attempts, reading, decoding, cache and cleanup; holds the channel.

Dependencies point down: ``worker`` uses the others; ``channel`` builds on
``chanstate``; neither they nor ``delivery`` know anything of HTTP.
"""
