"""Synthetic datasets in the real on-disk formats: DAMON (``damon``), PIAD (``piad``) and LEMON/3DIR
(``lemon``), made from the zoo's synthetic body (:mod:`zoo.body.synthetic`) and synthetic objects of
real PIAD classes with geometric affordance fields (``objects``); ``files`` writes their files atomically.
``python tools/make_synthetic.py {damon,piad,lemon} ...`` runs the generators."""
