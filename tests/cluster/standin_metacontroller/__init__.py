"""A test stand-in for Metacontroller v4.17.2, written in Python for the cluster tests.

Why a stand-in: issue 9 asks for the real Metacontroller built from its Go module, but the Go module
proxy refuses every version of ``github.com/metacontroller/metacontroller`` (``go mod download``
answers ``403 Forbidden / server response: This module version is not available.`` for the v4.17.2
pseudo-version, ``@v/list`` and ``@master``) and GitHub cannot be reached from the test machines. So
the cluster tests run this program instead, against the REAL kube-apiserver (built from Go modules by
tests/cluster/build.sh). It is not Metacontroller and is never shipped: the product installs the real
one (metacontroller/kustomization.yaml). Where the real thing becomes buildable, the tests should use
it and this package should go.

What it implements (Metacontroller's documented behaviour, see /work/shared/reference/notes/
metacontroller.md; the differences are listed at the end):

* Reads ``CompositeController`` and ``DecoratorController`` objects (metacontroller.k8s.io/v1alpha1)
  from the apiserver and (re)starts a controller when one is created, changed or deleted.
* Hooks ``sync``, ``finalize``, ``customize`` over webhooks, hook ``version`` v1 and v2 (object map
  keys ``Kind.apiVersion`` -> ``name`` or ``namespace/name``), ``responseUnMarshallMode`` strict
  (default for v2: unknown or duplicate response fields are an error) and loose.
* Webhook client: POST JSON, ``url`` or ``service``+``path``, ``timeout`` (Go duration, default 10s),
  success only on HTTP 200; 429 with ``Retry-After`` (seconds or HTTP date) requeues after that delay
  without an error; any other status, a timeout or an unreadable answer is an error: nothing is
  applied for that object in that round, a Warning ``SyncError`` event is recorded and the object is
  retried with exponential backoff. ``authorization`` (Bearer or another scheme, token from a Secret
  key), ``basicAuth``, ``caBundle`` (inline/secretRef/configMapRef), ``clientTLS``, and
  ``endpointConfigs`` matched by the URL's host (host or host:port), a hook's own settings winning.
  Secrets are read when the controller object is (re)loaded, as Metacontroller does.
* CompositeController: parent watch (+ ``resyncPeriodSeconds`` and one-shot ``resyncAfterSeconds``),
  ``parentResource.labelSelector``, ``ignoreStatusChanges``, the parent CRD must have the status
  subresource; ``generateSelector`` (children selected by label ``controller-uid=<parent uid>``,
  which is injected into desired children) or the parent's ``spec.selector``; claiming by
  ControllerRef (adopt matching orphans, release owned children that no longer match); customize
  hook (related rules by labels, namespace+labels, namespaceSelector, namespace/names; cached per
  parent UID and generation; related objects watched and their parents requeued); sync request
  ``{controller, parent, children, related, finalizing}``; children applied with server-side apply
  (field manager ``metacontroller``, force) with the update strategies OnDelete, InPlace and
  Recreate (a server-side dry run decides whether a Recreate child differs), controller
  ownerReferences (``controller: true, blockOwnerDeletion: true``), observed children missing from
  the answer deleted (background propagation, UID precondition); ``status`` written to the status
  subresource with ``observedGeneration``; finalize hook with finalizer
  ``metacontroller.io/compositecontroller-<name>``, called while the parent is being deleted (or no
  longer matches) until it answers ``finalized: true``.
* DecoratorController: ``resources`` with label and annotation selectors, ``attachments`` (ownerRef
  + annotation ``metacontroller.k8s.io/decorator-controller``), customize, sync request
  ``{controller, object, attachments, related, finalizing}``, ``labels``/``annotations`` from the
  answer (``null`` removes), ``status`` (``null`` leaves it), finalize hook with finalizer
  ``metacontroller.io/decoratorcontroller-<name>``.
* One worker loop over a de-duplicating work queue (an object changed while it is being synced is
  synced again afterwards), delayed requeues, per-object exponential backoff (5 ms doubling, capped
  by ``--max-backoff``), one log line per hook call and per child change on stdout, clean stop on
  SIGTERM/SIGINT.

Not implemented (our controllers do not use them): rolling update strategies (RollingRecreate /
RollingInPlace behave as Recreate / InPlace, without ControllerRevisions), ETag caching, the
dynamic-apply (client-side three-way merge) strategy, ``--target-label-selector``, metrics, leader
election. It reads the apiserver directly instead of through informer caches, and runs one worker
where Metacontroller runs five.

Run: ``python -m standin_metacontroller --kubeconfig FILE`` with ``tests/cluster`` on ``sys.path``
(or ``python tests/cluster/standin_metacontroller/__main__.py --kubeconfig FILE``); see README.md.
"""
