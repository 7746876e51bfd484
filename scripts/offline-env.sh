#!/usr/bin/env bash
# Source this file: when ../shared/data (or $MLOPS_SHARED_DATA) holds the offline faces and
# weights, point KERAS_HOME and SCIKIT_LEARN_DATA at temporary folders of symlinks into it
# (loaders write caches, and shared/ may be read-only), and export MLOPS_FACE_WEIGHTS.
# Without that folder nothing changes: Keras and scikit-learn download as usual.

_repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_shared="${MLOPS_SHARED_DATA:-$_repo_root/../shared/data}"
if [ -f "$_shared/keras/vgg16_faces_notop.weights.h5" ]; then
  _shared="$(cd "$_shared" && pwd)"
  _homes="${MLOPS_OFFLINE_HOMES:-$_repo_root/.mlops/offline}"
  mkdir -p "$_homes/keras_home" "$_homes/scikit_learn_data/lfw_home"
  cp -f "$_shared/keras/keras.json" "$_homes/keras_home/keras.json"
  ln -sfn "$_shared/scikit_learn_data/olivetti_py3.pkz" "$_homes/scikit_learn_data/olivetti_py3.pkz"
  for _f in lfw_funneled pairs.txt pairsDevTrain.txt pairsDevTest.txt; do
    ln -sfn "$_shared/scikit_learn_data/lfw_home/$_f" "$_homes/scikit_learn_data/lfw_home/$_f"
  done
  export MLOPS_SHARED_DATA="$_shared"
  export KERAS_HOME="$_homes/keras_home"
  export SCIKIT_LEARN_DATA="$_homes/scikit_learn_data"
  export MLOPS_FACE_WEIGHTS="$_shared/keras/vgg16_faces_notop.weights.h5"
  echo "offline: data and VGG16 face weights from $_shared (KERAS_HOME=$KERAS_HOME, SCIKIT_LEARN_DATA=$SCIKIT_LEARN_DATA)"
fi
unset _repo_root _shared _homes _f
