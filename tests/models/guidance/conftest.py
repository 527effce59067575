"""Guidance tests: an isolated ZOO_HOME (tiny model directories and text caches) and the tiny guidances, built
once per session (building is the slow part; every test then runs in a fraction of a second)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these models are tiny, and on shared cores more threads mostly wait on each other
    (measured: one tiny SDS step 0.06 s on one thread, 2-4 s on two threads of a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _one_thread_build(build):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build()
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def guidance_home(tmp_path_factory):
    """An isolated $ZOO_HOME for the whole session."""
    home = tmp_path_factory.mktemp("guidance_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def sd(guidance_home):
    """The tiny Stable Diffusion SDS guidance (resolution 32: latents 4 x 4 x 4)."""
    from zoo.models.guidance.sds import StableDiffusionSDS

    return _one_thread_build(lambda: StableDiffusionSDS(variant="tiny", resolution=32))


@pytest.fixture(scope="session")
def deepfloyd(guidance_home):
    """The tiny DeepFloyd IF SDS guidance (resolution 16: pixels 3 x 16 x 16)."""
    from zoo.models.guidance.sds import DeepFloydSDS

    return _one_thread_build(lambda: DeepFloydSDS(variant="tiny", resolution=16))


@pytest.fixture
def fresh_cache(tmp_path):
    """A function giving a guidance an empty text-embedding cache under tmp_path (restored afterwards)."""
    from zoo.models.guidance.text_cache import TextEmbeddingCache

    saved = []

    def use(guidance):
        saved.append((guidance, guidance._cache, dict(guidance._prompts)))
        guidance._cache = TextEmbeddingCache(guidance._cache.key, root=tmp_path / "text_embeddings")
        guidance._prompts.clear()
        return guidance._cache

    yield use
    for g, cache, prompts in saved:
        g._cache, g._prompts = cache, prompts
