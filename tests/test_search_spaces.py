"""Search spaces: every method declares what a tuner searches, and bad spaces fail before work."""

import math

import ml_collections
import pytest

from unlearn_jax import methods
from unlearn_jax.config import ConfigError
from unlearn_jax.methods import Choice, Float, Int

TRACKS = ("image", "lm")
# Methods with nothing to tune: retraining uses the study's recipe, SISA its shard layout.
UNTUNED = {"image": {"retrain", "sisa"}, "lm": {"retrain"}}


def builtin_spaces():
  """(track, name, space, defaults) of every built-in method with a declared space."""
  out = []
  for track in TRACKS:
    defaults = methods.default_configs(track)
    for name in methods.builtin_names(track):
      space = methods.search_space(name, track)
      if space:
        out.append((track, name, space, defaults[name]))
  return out


def refused(name, space, track="image", field="config.tune.space.x"):
  """The one-line ConfigError that check_search_space raises for `space`."""
  with pytest.raises(ConfigError) as error:
    methods.check_search_space(name, space, methods.default_configs(track)[name], track=track,
                               field=field)
  message = str(error.value)
  assert "\n" not in message and message.startswith(field)
  return message


def test_every_builtin_method_with_hyper_parameters_declares_a_space():
  for track in TRACKS:
    for name in methods.builtin_names(track):
      space = methods.search_space(name, track)
      if name in UNTUNED[track]:
        assert space == {}, (track, name)
      else:
        assert space, f"{track} method {name} declares no search space"


def test_every_declared_space_passes_its_own_check():
  spaces = builtin_spaces()
  for track in TRACKS:
    assert ({name for where, name, _, _ in spaces if where == track}
            == set(methods.builtin_names(track)) - UNTUNED[track])
  for track, name, space, defaults in spaces:
    methods.check_search_space(name, space, defaults, track=track)
    methods.check_search_space(name, space, track=track)  # defaults=None: the method's own


def test_every_default_lies_within_its_range():
  for track, name, space, defaults in builtin_spaces():
    for key, entry in space.items():
      default = defaults[key]
      where = f"{track}/{name}.{key}={default!r} outside {entry!r}"
      if isinstance(entry, Choice):
        assert default in entry.values, where
      else:
        assert entry.low <= default <= entry.high, where
        if isinstance(entry, Int):
          assert (default - entry.low) % entry.step == 0, where


def test_learning_rates_span_two_decades_on_a_log_scale():
  for track, name, space, _ in builtin_spaces():
    if "lr" in space:
      lr = space["lr"]
      assert isinstance(lr, Float) and lr.log, (track, name)
      assert lr.high / lr.low >= 100 * (1 - 1e-9), (track, name, lr)


def test_every_grid_point_of_every_space_passes_check_config():
  for track, name, space, defaults in builtin_spaces():
    for point in methods.space_grid(space, points=2):
      cfg = ml_collections.ConfigDict(defaults.to_dict())
      for key, value in point.items():
        cfg[key] = float(value) if isinstance(defaults[key], float) else value
      methods.check_config(name, cfg, track)


def test_an_unknown_parameter_is_refused_naming_the_field():
  message = refused("salun", {"lrr": Float(1e-3, 1e-1, log=True)},
                    field="config.tune.space.salun")
  assert message.startswith("config.tune.space.salun.lrr: unknown parameter of salun; "
                            "its parameters: ")
  assert "mask_ratio" in message and "lr" in message


def test_an_empty_space_is_refused_naming_the_field():
  message = refused("salun", {}, field="config.tune.space.salun")
  assert message.startswith("config.tune.space.salun: empty search space")


def test_a_float_range_for_an_integer_parameter_is_refused():
  message = refused("grad_ascent", {"epochs": Float(1.0, 10.0)})
  assert message.startswith("config.tune.space.x.epochs: ") and "integer" in message
  # The other way round is fine: an Int range for a float parameter.
  methods.check_search_space("finetune", {"epochs": Int(1, 2)},
                             methods.default_configs()["finetune"])


def test_a_choice_of_the_wrong_type_is_refused():
  message = refused("random_label", {"sampling": Choice((1, 2))})
  assert message.startswith("config.tune.space.x.sampling: ")
  refused("random_label", {"lr": Choice(("fast", "slow"))})
  refused("random_label", {"sampling": Float(0.0, 1.0)})


def test_a_choice_value_the_method_refuses_is_refused_naming_it():
  message = refused("random_label", {"sampling": Choice(("mixed", "bogus"))})
  assert message.startswith("config.tune.space.x.sampling: sampling='bogus' is refused by "
                            "random_label")
  assert "mixed, every_batch" in message  # check_config's reason comes along
  refused("boundary_shrink", {"label_rule": Choice(("attack", "nearest"))})
  refused("influence", {"solver": Choice(("cg", "newton"))})
  refused("npo", {"beta": Choice((0.1, 0.0))}, track="lm")


def test_a_range_end_the_method_refuses_is_refused():
  assert "mask_ratio=1.5" in refused("salun", {"mask_ratio": Float(0.5, 1.5)})
  refused("finetune", {"lr": Float(-1e-3, 1e-1)})  # shared check: lr > 0
  refused("neggrad_plus", {"alpha": Float(0.5, 1.2)})
  refused("scrub", {"msteps": Int(1, 4)})  # msteps ≤ epochs (3)


def test_a_non_range_entry_and_a_non_dict_space_are_refused():
  assert "is not a range" in refused("finetune", {"lr": (1e-3, 1e-1)})
  refused("finetune", [("lr", Float(1e-3, 1e-1))])


def test_ranges_validate_themselves():
  for make in (lambda: Float(1.0, 1.0), lambda: Float(2.0, 1.0), lambda: Float(0.0, 1.0, log=True),
               lambda: Float(math.nan, 1.0), lambda: Int(1, 1), lambda: Int(0, 10, log=True),
               lambda: Int(1.5, 3), lambda: Int(0, 10, step=3), lambda: Int(1, 9, log=True, step=2),
               lambda: Choice(()), lambda: Choice(("a", "a")), lambda: Choice("ab"),
               lambda: Choice(((1, 2),))):
    with pytest.raises(ValueError):
      make()
  assert Float(1, 10).low == 1.0 and isinstance(Float(1, 10).high, float)
  assert Choice(["a", "b"]).values == ("a", "b")
  with pytest.raises(TypeError, match="search_space"):
    methods.Spec(search_space={"lr": (1e-3, 1e-1)})


def test_specs_with_spaces_compare_and_hash():
  space = {"lr": Float(1e-3, 1e-1, log=True), "rule": Choice(("a", "b"))}
  assert methods.Spec(search_space=space) == methods.Spec(search_space=dict(space))
  assert hash(methods.Spec(search_space=space)) == hash(methods.Spec(search_space=dict(space)))
  assert methods.Spec() == methods.Spec(search_space={}) != methods.Spec(search_space=space)


def test_space_grid_is_the_cross_product_with_log_spacing():
  space = {"lr": Float(1e-3, 1e-1, log=True), "epochs": Int(1, 3),
           "rule": Choice(("a", "b")), "ratio": Float(0.25, 0.75)}
  grid = methods.space_grid(space, points=3)
  assert len(grid) == 3 * 3 * 2 * 3
  assert grid[0] == {"lr": 1e-3, "epochs": 1, "rule": "a", "ratio": 0.25}
  assert grid[1] == {"lr": 1e-3, "epochs": 1, "rule": "a", "ratio": 0.5}  # the last fastest
  assert sorted({p["lr"] for p in grid}) == [1e-3, 1e-2, 1e-1]
  assert sorted({p["epochs"] for p in grid}) == [1, 2, 3]
  assert sorted({p["ratio"] for p in grid}) == [0.25, 0.5, 0.75]
  assert len({tuple(sorted(p.items())) for p in grid}) == len(grid)


def test_space_grid_rounds_integers_onto_their_steps_and_drops_repeats():
  assert methods.space_grid({"n": Int(1, 2)}, points=3) == [{"n": 1}, {"n": 2}]
  assert [p["n"] for p in methods.space_grid({"n": Int(0, 10, step=5)}, 4)] == [0, 5, 10]
  assert [p["n"] for p in methods.space_grid({"n": Int(1, 100, log=True)}, 3)] == [1, 10, 100]
  assert methods.space_grid({"x": Float(1e-4, 1e-2, log=True)}, 1) == [{"x": 1e-3}]
  assert methods.space_grid({"x": Float(0.0, 1.0)}, 1) == [{"x": 0.5}]
  assert methods.space_grid({}, 3) == [{}]
  for points in (0, 1.5, True):
    with pytest.raises(ValueError, match="points"):
      methods.space_grid({"x": Float(0.0, 1.0)}, points)


def test_a_registered_method_has_its_specs_space():
  space = {"lr": Float(1e-3, 1e-1, log=True), "steps": Int(1, 8)}

  def my_method(state, run, cfg, rng):
    del run, cfg, rng
    return state, {"steps": 0, "wall_s": 0.0}

  for track in TRACKS:
    methods.register("tuned_method", my_method, default_config={"lr": 0.01, "steps": 4},
                     spec=methods.Spec(search_space=space), track=track)
    try:
      assert methods.search_space("tuned_method", track) == space
      methods.check_search_space("tuned_method", space, track=track)
      with pytest.raises(ConfigError, match=r"^search_space\.step: unknown parameter of "
                                            r"tuned_method; its parameters: lr, steps$"):
        methods.check_search_space("tuned_method", {"step": Int(1, 8)}, track=track)
    finally:
      methods.unregister("tuned_method", track)


def test_a_registered_method_without_a_spec_has_an_empty_space():
  methods.register("plain_method", lambda state, run, cfg, rng: (state, {}),
                   default_config={"lr": 0.01})
  try:
    assert methods.search_space("plain_method") == {}
  finally:
    methods.unregister("plain_method")


def test_an_unknown_method_is_refused():
  with pytest.raises(ConfigError, match="unknown name"):
    methods.search_space("salunn")
  with pytest.raises(ConfigError, match="unknown name"):
    methods.check_search_space("salunn", {"lr": Float(0.1, 1.0)})
