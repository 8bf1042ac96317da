"""Coverage of the paper's 55 numbered statements by the certificates of ``fibration verify``.

``STATEMENTS`` lists every numbered definition, theorem, lemma, proposition, property, claim
and remark of arXiv 2603.08239v1 (24 in the main text, 31 in the appendices) with its page, a
one-line paraphrase, the certificate ids that check it and the test files. The methods and
certificate names of the table are read from the registry, so a certificate that is renamed,
removed or changes method changes the table; ``fibration verify --coverage`` prints it and
``tests/test_proofs_coverage.py`` checks that docs/theory.md carries the current one.
"""

from __future__ import annotations

import dataclasses

from fibration_theory.proofs.registry import Certificate, load_all


@dataclasses.dataclass(frozen=True)
class Statement:
    number: str       # "Thm D.3"
    page: int         # page of the PDF where it is stated
    text: str         # our paraphrase
    certs: tuple[str, ...] = ()   # certificate ids (V.., F..: all of them) or names (mod.fn)
    tests: tuple[str, ...] = ()   # test files
    note: str = ""    # what covers it when no certificate does (an implementation, a reason)


T_TR = "tests/test_trust_region.py"
T_PTR = "tests/test_proofs_trust_region.py"
T_SMT = "tests/test_proofs_smt.py"
T_TIES = "tests/test_proofs_ties.py"
T_FBG = "tests/test_fbg.py"
T_FGH = "tests/test_fgh.py"
T_GATE = "tests/test_gating.py"
T_JAC = "tests/test_jacobian.py"
T_RGF = "tests/test_proofs_rgf.py"
T_LOSS = "tests/test_losses.py"
T_SIM = "tests/test_simulations_experiments.py"

STATEMENTS: tuple[Statement, ...] = (
    Statement("Thm 2.1", 3, "at gamma = 1 the TV- and KL-TRPO trust regions collapse to the old "
              "policy: delta(TRPO) = (1-gamma)/(8 gamma) = 0", ("cert_vanishing.check_vanishing",), (T_TR, T_PTR)),
    Statement("Def 3.1", 4, "RGF: a surrogate is sum_i mu_i G(r)_i A_i over an index set E",
              ("V6",), (T_LOSS, T_RGF)),
    Statement("Def 3.2", 4, "APC-Obj: per-entry clip of r - 1 to the state's TV budget left by "
              "the other entries (radius as typeset here: finding F2)", ("V3", "F2"), (T_TR, T_PTR)),
    Statement("Thm 3.3", 5, "APC-Obj and sample-based TV-TRPO give the same update (restates "
              "Thm D.10 without its assumptions (65)-(66): finding F6)", ("V5", "F6"),
              (T_PTR, T_SMT, T_TIES)),
    Statement("Remark 3.4", 5, "APC-Obj keeps its structure when delta is relaxed to a "
              "hyperparameter", (), (), "interpretive; F5 quantifies r < 0 at a relaxed delta"),
    Statement("Claim 3.5", 5, "GSPO keeps the average trajectory TV below about sqrt(eps/2); "
              "sampled, in eq 39's units, sqrt(2 eps) (F1)", ("V7", "F1"),
              (T_RGF, "tests/test_proofs_claim35.py", T_SIM)),
    Statement("Remark 3.6", 5, "GSPO's eps = 4e-4 gives delta = sqrt(2e-4) = 0.014 (0.028 in "
              "eq 39's units)", ("cert_claim35.check_claim_35_sampled",),
              ("tests/test_proofs_claim35.py",)),
    Statement("Remark 4.1", 6, "terminated trajectories are padded with a null state-action",
              ("F8",), ("tests/test_proofs_triviality.py",),
              "the padding Remark E.2's product structure needs"),
    Statement("Remark 4.2", 7, "the choice of base space sets the granularity of global "
              "control", (), (), "interpretive"),
    Statement("Def 4.3", 7, "FBG: bundle, densities, pushforward, reflecting kernel, atomic "
              "gates, decomposition F and recovery R", ("V8", "V9", "V10"), (T_FBG,)),
    Statement("Def 4.4", 8, "the FBG surrogate sum (1/T) R o G o F(r) A (eq 5)", ("V10",),
              (T_FBG,)),
    Statement("Thm 4.5", 8, "gates meeting the identity conditions give value and gradient "
              "agreement at theta_old", ("V8", "F3"), (T_FBG, T_SMT)),
    Statement("Remark 4.6", 8, "the reflecting subtraction passes global information to local "
              "gates", (), (), "interpretive"),
    Statement("Remark 4.7", 9, "any base space gives first-order agreement if the gates meet "
              "the identity conditions", ("V8", "V14"), (T_FBG, T_FGH)),
    Statement("Def 5.1", 9, "FiberPO: sign-split base gate g_agg and logclip fiber gate "
              "(eqs 6-18)", ("V10", "V15"), (T_GATE, T_FBG, T_SMT)),
    Statement("Prop 5.2", 16, "FiberPO's ratio-gating Jacobian (eq 20)", ("V11",),
              (T_JAC, T_SMT)),
    Statement("Property 5.3", 16, "the Jacobian is block-diagonal over trajectories", ("V11",),
              (T_JAC, T_SMT)),
    Statement("Property 5.4", 17, "at r = 1 the Jacobian is the identity", ("V11",),
              (T_JAC, T_SMT)),
    Statement("Property 5.5", 17, "the coupling term (b) of eq 20 is O(1/T) (outside rollback)",
              ("V11",), (T_JAC, T_SMT)),
    Statement("Def 6.1", 17, "uniform fibration hierarchy: a chain of strata", ("V14",),
              (T_FGH,)),
    Statement("Def 6.2", 17, "FGH: reflecting kernels and atomic gates at every level "
              "(eqs 21-29)", ("V14",), (T_FGH,)),
    Statement("Remark 6.3", 18, "depth n = 1 is FBG", ("V14",), (T_FGH,)),
    Statement("Def 6.4", 19, "FiberPO-Domain (eqs 30-33); p.19: a violation at one level does "
              "not change the other levels' gates", ("V10", "F4",
                                                     "cert_smt_gates.check_level_decoupling_smt"),
              (T_GATE, T_FGH, T_SMT)),
    Statement("Remark 6.5", 19, "a rooted tree of strata instead of a chain", (), (),
              "not supported: a Hierarchy is a chain of nested partitions of the rows, each "
              "level refining the one above, so two incomparable classifications at the same "
              "depth (domain and modality) cannot be expressed; eq 26's sum runs over a chain"),
    Statement("Def A.1", 25, "policy-ratio space over sampled state-action pairs", (), (),
              "definition (trust_region._pairs)"),
    Statement("Remark A.2", 25, "augmented pairs (s, a, tau, t) carry extra information", (), (),
              "definition (counts n_{s,a})"),
    Statement("Def B.1", 26, "the TV trust region of radius delta", ("cert_vanishing.check_vanishing",), (T_TR,)),
    Statement("Lemma B.2", 26, "the TV-TRPO update lies in the delta(TRPO) trust region",
              ("V1", "F7"), (T_TR, T_SMT, "tests/test_proofs_population.py"),
              "true in sample form; in population form over real policies it fails: F7"),
    Statement("Thm B.3", 26, "restatement of Thm 2.1", ("cert_vanishing.check_vanishing",), (T_TR,)),
    Statement("Def C.1", 27, "APC-Obj policy iteration (radius typeset as in Def 3.2)",
              ("V3", "F2"), (T_TR,)),
    Statement("Def C.2", 27, "APC-Obj in RGF form", ("V3", "V6"), (T_TR, T_RGF)),
    Statement("Def C.3", 28, "APC-Obj ratio gating map 1 + clip(r - 1, B) (eq 59)", ("V3",),
              (T_TR,)),
    Statement("Remark C.4", 29, "APC-Obj's per-state regimes become FiberPO's aggregate "
              "regimes (exact for a uniform drift up to the zeroing edge, which moves from "
              "T delta/(T-1) to (1 + 1/T) delta)", ("cert_smt_gates.check_regime_lift_smt",),
              (T_SMT,)),
    Statement("Remark C.5", 30, "without the min, the PPO/GRPO/GSPO gates clip(r or s, 1 +- eps) "
              "carry no sign function", ("V6",), (T_RGF,)),
    Statement("Def D.1", 34, "sample-based TV-TRPO (eqs 67-68), min-L2 tie-break",
              ("V2",), (T_TR, T_TIES)),
    Statement("Lemma D.2", 35, "M <= ||A||_inf", ("V1",), (T_TR, T_SMT)),
    Statement("Thm D.3", 35, "the TV-TRPO maximizer is t* Delta_hat*, all states at TV t*",
              ("V2", "F1", "F5"), (T_TR, T_PTR, T_SMT, T_TIES)),
    Statement("Def D.4", 36, "APC-Obj in the discounted case, radius (1-gamma)M/(8 gamma||A||), "
              "min-L2 tie-break", ("V5", "F2"), (T_TR, T_TIES)),
    Statement("Def D.5", 37, "surrogated APC-Obj (eqs 73-74)", ("V3",), (T_TR,)),
    Statement("Lemma D.6", 37, "APC-Obj equals its surrogated form under (66)", ("V3",),
              (T_TR, T_PTR)),
    Statement("Remark D.7", 37, "grouping the n copies of a pair gives the surrogated form",
              ("V3",), (T_TR,)),
    Statement("Def D.8", 37, "clipping operator G and centered projection", ("V4",),
              (T_TR, T_PTR)),
    Statement("Lemma D.9", 37, "the centered clip is a retraction, strictly inside when "
              "outside", ("V4",), (T_TR, T_PTR, T_SMT)),
    Statement("Thm D.10", 39, "APC-Obj and TV-TRPO give the same update under (65)-(66)",
              ("V5", "F6"), (T_PTR, T_SMT, T_TIES)),
    Statement("Lemma D.11", 40, "delta(APC-Obj) <= delta(TRPO)", ("V1",), (T_TR, T_SMT)),
    Statement("Lemma D.12", 41, "both updates lie in the delta(TRPO) trust region",
              ("V1", "F1", "F7"), (T_TR, T_SMT, "tests/test_proofs_population.py"),
              "true in sample form; in population form over real policies it fails: F7"),
    Statement("Def E.1", 41, "smooth fiber bundle", (), (), "definition (finite bundles in fbg.py)"),
    Statement("Remark E.2", 41, "a finite base makes the bundle globally trivial, E = B x F "
              "(needs equal fibers: Remark 4.1's padding; F8)", ("F8",),
              ("tests/test_proofs_triviality.py",)),
    Statement("Def E.3", 42, "density on a vector space", (), (), "definition"),
    Statement("Def E.4", 42, "density on a manifold", (), (), "definition"),
    Statement("Remark E.5", 42, "a density defines a local signed measure", (), (),
              "interpretive"),
    Statement("Def E.6", 43, "local information in FBG", ("V8",), (T_FBG,)),
    Statement("Def E.7", 43, "global information in FBG", ("V8",), (T_FBG,)),
    Statement("Remark E.8", 48, "g_agg has three regimes", ("V12", "V13"), (T_GATE, T_SMT)),
    Statement("Def E.9", 49, "FiberPO in RGF form (eq 80)", ("V10",), (T_FBG, T_GATE)),
)


def _by_id() -> dict[str, list[Certificate]]:
    out: dict[str, list[Certificate]] = {}
    for cert in load_all().values():
        out.setdefault(cert.id, []).append(cert)
    return out


def coverage_rows() -> list[tuple[str, ...]]:
    """``(number, page, text, certificates, tests, methods)`` per statement; certificate
    names and methods come from the registry (an unknown id raises)."""
    by_id = _by_id()
    registry = load_all()
    rows = []
    for st in STATEMENTS:
        certs: list[Certificate] = []
        for cid in st.certs:
            if "." in cid:
                if cid not in registry:
                    raise ValueError(f"{st.number}: no certificate named {cid!r} is registered")
                certs.append(registry[cid])
            elif cid in by_id:
                certs += by_id[cid]
            else:
                raise ValueError(f"{st.number}: no certificate with id {cid!r} is registered")
        names = ", ".join(f"{c.id} `{c.name}`" for c in certs) or "-"
        methods = ", ".join(sorted({c.method for c in certs})) or "-"
        text = st.text + (f" ({st.note})" if st.note else "")
        rows.append((st.number, str(st.page), text, names, ", ".join(f"`{t}`" for t in st.tests)
                     or "-", methods))
    return rows


def coverage_markdown() -> str:
    """The coverage table, as docs/theory.md carries it between its coverage markers."""
    rows = coverage_rows()
    n_cert = sum(r[3] != "-" for r in rows)
    head = (f"{len(rows)} numbered statements, {n_cert} with a certificate; generated by "
            "`fibration verify --coverage`.")
    lines = [head, "",
             "| number | page | our text | certificates | tests | method |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- coverage -->", "<!-- /coverage -->"
