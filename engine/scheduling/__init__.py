"""The scheduler: moves runs along their DAG, and the dispatch gate that turns a ready
step into a job, an approval or a denial under the policy active right now.

May import ``runs`` and every layer below it.
"""
