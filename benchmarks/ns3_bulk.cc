// ns3_bulk.cc -- ns-3 (Debian libns3-dev 3.37) TCP bulk-transfer timing anchor.
//
// The project's reference peer for benchmarks/netstack_bench.py, which runs it on the same
// workload in the same invocation (benchmarks/ns3_env.sh installs ns-3 and builds this file).
//
// Build (ns3_env.sh does this; Debian's ns3-*.pc files are broken, so flags are explicit):
//   g++ -O2 -std=c++17 -DNS3_BUILD_PROFILE_RELEASE -DNS3_LOG_ENABLE ns3_bulk.cc -o /tmp/ns3_bulk \
//       -lns3-flow-monitor -lns3-applications -lns3-point-to-point -lns3-internet \
//       -lns3-traffic-control -lns3-bridge -lns3-network -lns3-stats -lns3-core
//   (-DNS3_LOG_ENABLE / no NS3_ASSERT_ENABLE: matches how Debian built the libraries,
//    "--build-profile=release --enable-logs", see debian/rules of source package ns3 3.37-2.)
// Run:
//   /tmp/ns3_bulk --bytes=16777216 --mode=trace      # cheap PhyTxEnd/Drop trace-sink counters
//   /tmp/ns3_bulk --bytes=16777216 --mode=flowmon    # FlowMonitor only (counts from its stats)
//   /tmp/ns3_bulk --bytes=16777216 --mode=none       # no counters (only the stop-on-last-ACK hook)
//   /tmp/ns3_bulk --bytes=16777216 --mode=verify     # trace + full header parse of every packet (slow; checks the size-based counts)
//   options: --sack=1 --delAck=2 --recovery=prr|classic --seg=1460 --queue=100
// Output: one line "RESULT key=value ..." (parsed by netstack_bench.py).
//
// Workload: 2 nodes, one point-to-point link 100 Mb/s, 1 ms delay, MTU 1500 (PPP);
// device queue DropTailQueue 100 packets, root queue disc (FqCoDel, which
// Ipv4AddressHelper installs by default) removed so the 100p drop-tail queue is the only queue;
// TcpNewReno, SegmentSize 1460 (TCP timestamps off so 1460+40 = 1500 fits the MTU),
// Snd/RcvBufSize 1 MiB, other TCP attributes ns-3 defaults (SACK on, PRR recovery,
// initial cwnd 10, DelAckCount 2, initial ssthresh "infinite", window scaling on);
// BulkSendApplication (SendSize 65536, MaxBytes N) -> PacketSink; the simulation stops at
// the event where the sender's HighestRxAck covers all N bytes.
#include "ns3/applications-module.h"
#include "ns3/core-module.h"
#include "ns3/flow-monitor-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/traffic-control-module.h"

#include <chrono>
#include <cstdio>
#include <string>

using namespace ns3;
using Clock = std::chrono::steady_clock;

static uint64_t g_total = 0;
static uint64_t g_acked = 0;
static double g_stopTime = -1;
// per direction: 0 = A->B (data), 1 = B->A (acks)
static uint64_t g_txPkts[2] = {0, 0}, g_txBytes[2] = {0, 0};
static uint64_t g_bigPkts = 0, g_bigBytes = 0; // A->B packets > 100 bytes = data segments
static uint64_t g_drops = 0;
// verify mode (header parse)
static uint64_t v_data[2] = {0, 0}, v_pure[2] = {0, 0}, v_payload[2] = {0, 0}, v_ctrl[2] = {0, 0};

static void
OnHighRxAck(SequenceNumber32 oldv, SequenceNumber32 newv)
{
    // ISN 0, SYN takes 1 (so acked = bytes + 1 once the FIN, sent with the last data, is acked)
    uint64_t acked = newv.GetValue() > 0 ? newv.GetValue() - 1 : 0;
    if (acked > g_acked)
        g_acked = acked;
    if (g_acked >= g_total && g_stopTime < 0)
    {
        g_stopTime = Simulator::Now().GetSeconds();
        Simulator::Stop();
    }
}

static void
PhyTxEnd(int dir, Ptr<const Packet> p)
{
    uint32_t s = p->GetSize();
    g_txPkts[dir]++;
    g_txBytes[dir] += s;
    if (dir == 0 && s > 100)
    {
        g_bigPkts++;
        g_bigBytes += s;
    }
}

static void
PhyTxEndVerify(int dir, Ptr<const Packet> p)
{
    PhyTxEnd(dir, p);
    Ptr<Packet> q = p->Copy();
    PppHeader ppp;
    q->RemoveHeader(ppp);
    Ipv4Header ip;
    q->RemoveHeader(ip);
    TcpHeader tcp;
    q->RemoveHeader(tcp);
    uint32_t pl = q->GetSize();
    uint8_t f = tcp.GetFlags();
    if (f & (TcpHeader::SYN | TcpHeader::FIN))
        v_ctrl[dir]++;
    if (pl > 0)
    {
        v_data[dir]++;
        v_payload[dir] += pl;
    }
    else if (!(f & (TcpHeader::SYN | TcpHeader::FIN)))
        v_pure[dir]++;
}

static void
QDrop(Ptr<const Packet>)
{
    g_drops++;
}

static uint64_t v_ipTx = 0, v_ipDrop = 0, v_tcDrop = 0;
static uint32_t v_maxCwnd = 0, v_maxInFlight = 0;
static void IpTx(Ptr<const Packet>, Ptr<Ipv4>, uint32_t) { v_ipTx++; }
static void IpDrop(const Ipv4Header&, Ptr<const Packet>, Ipv4L3Protocol::DropReason, Ptr<Ipv4>, uint32_t) { v_ipDrop++; }
static void TcDrop(Ptr<const Packet>) { v_tcDrop++; }
static void Cwnd(uint32_t, uint32_t n) { if (n > v_maxCwnd) v_maxCwnd = n; }
static void InFlight(uint32_t, uint32_t n) { if (n > v_maxInFlight) v_maxInFlight = n; }

static bool g_verify = false;
static void
HookSender()
{
    Config::ConnectWithoutContext("/NodeList/0/$ns3::TcpL4Protocol/SocketList/*/HighestRxAck",
                                  MakeCallback(&OnHighRxAck));
    if (g_verify)
    {
        Config::ConnectWithoutContext("/NodeList/0/$ns3::TcpL4Protocol/SocketList/*/CongestionWindow",
                                      MakeCallback(&Cwnd));
        Config::ConnectWithoutContext("/NodeList/0/$ns3::TcpL4Protocol/SocketList/*/BytesInFlight",
                                      MakeCallback(&InFlight));
    }
}

int
main(int argc, char* argv[])
{
    auto t0 = Clock::now();
    uint64_t bytes = 16 * 1024 * 1024;
    std::string mode = "trace";
    bool sack = true;
    uint32_t delAck = 2;
    std::string recovery = "prr";
    uint32_t seg = 1460;
    uint32_t queue = 100;
    CommandLine cmd;
    cmd.AddValue("bytes", "bytes to transfer", bytes);
    cmd.AddValue("mode", "trace|flowmon|none|verify", mode);
    cmd.AddValue("sack", "TCP SACK", sack);
    cmd.AddValue("delAck", "DelAckCount", delAck);
    cmd.AddValue("recovery", "prr|classic", recovery);
    cmd.AddValue("seg", "SegmentSize", seg);
    cmd.AddValue("queue", "device queue packets", queue);
    cmd.Parse(argc, argv);
    g_total = bytes;

    Config::SetDefault("ns3::TcpL4Protocol::SocketType", TypeIdValue(TcpNewReno::GetTypeId()));
    if (recovery == "classic")
        Config::SetDefault("ns3::TcpL4Protocol::RecoveryType",
                           TypeIdValue(TcpClassicRecovery::GetTypeId()));
    Config::SetDefault("ns3::TcpSocket::SegmentSize", UintegerValue(seg));
    Config::SetDefault("ns3::TcpSocket::SndBufSize", UintegerValue(1 << 20));
    Config::SetDefault("ns3::TcpSocket::RcvBufSize", UintegerValue(1 << 20));
    Config::SetDefault("ns3::TcpSocket::DelAckCount", UintegerValue(delAck));
    Config::SetDefault("ns3::TcpSocketBase::Timestamp", BooleanValue(false));
    Config::SetDefault("ns3::TcpSocketBase::Sack", BooleanValue(sack));

    NodeContainer nodes;
    nodes.Create(2);
    PointToPointHelper p2p;
    p2p.SetDeviceAttribute("DataRate", StringValue("100Mbps"));
    p2p.SetDeviceAttribute("Mtu", UintegerValue(1500));
    p2p.SetChannelAttribute("Delay", StringValue("1ms"));
    p2p.SetQueue("ns3::DropTailQueue<Packet>",
                 "MaxSize",
                 QueueSizeValue(QueueSize(std::to_string(queue) + "p")));
    NetDeviceContainer devs = p2p.Install(nodes);

    InternetStackHelper stack;
    stack.Install(nodes);
    Ipv4AddressHelper addr;
    addr.SetBase("10.1.1.0", "255.255.255.0");
    Ipv4InterfaceContainer ifs = addr.Assign(devs);
    TrafficControlHelper tch;
    tch.Uninstall(devs); // only the device's 100p DropTailQueue remains

    uint16_t port = 5000;
    BulkSendHelper bulk("ns3::TcpSocketFactory", InetSocketAddress(ifs.GetAddress(1), port));
    bulk.SetAttribute("MaxBytes", UintegerValue(bytes));
    bulk.SetAttribute("SendSize", UintegerValue(65536));
    ApplicationContainer src = bulk.Install(nodes.Get(0));
    src.Start(Seconds(0));
    PacketSinkHelper sinkh("ns3::TcpSocketFactory", InetSocketAddress(Ipv4Address::GetAny(), port));
    ApplicationContainer sinkApp = sinkh.Install(nodes.Get(1));
    sinkApp.Start(Seconds(0));

    Simulator::Schedule(NanoSeconds(1), &HookSender); // sender socket exists after StartApplication at t=0

    Ptr<PointToPointNetDevice> dA = DynamicCast<PointToPointNetDevice>(devs.Get(0));
    Ptr<PointToPointNetDevice> dB = DynamicCast<PointToPointNetDevice>(devs.Get(1));
    if (mode == "trace" || mode == "verify")
    {
        auto cb = mode == "verify" ? &PhyTxEndVerify : &PhyTxEnd;
        dA->TraceConnectWithoutContext("PhyTxEnd", MakeBoundCallback(cb, 0));
        dB->TraceConnectWithoutContext("PhyTxEnd", MakeBoundCallback(cb, 1));
        dA->GetQueue()->TraceConnectWithoutContext("Drop", MakeCallback(&QDrop));
        dA->TraceConnectWithoutContext("MacTxDrop", MakeCallback(&QDrop));
        // With no root queue disc, a full device queue stops the netdevice tx queue and the
        // traffic-control layer drops the packet (TcDrop): this is where the 100p tail drop shows.
        Config::ConnectWithoutContext("/NodeList/0/$ns3::TrafficControlLayer/TcDrop",
                                      MakeCallback(&QDrop));
    }
    if (mode == "verify")
    {
        g_verify = true;
        Config::ConnectWithoutContext("/NodeList/0/$ns3::Ipv4L3Protocol/Tx", MakeCallback(&IpTx));
        Config::ConnectWithoutContext("/NodeList/0/$ns3::Ipv4L3Protocol/Drop", MakeCallback(&IpDrop));
        Config::ConnectWithoutContext("/NodeList/0/$ns3::TrafficControlLayer/TcDrop", MakeCallback(&TcDrop));
    }
    FlowMonitorHelper fmh;
    Ptr<FlowMonitor> fm;
    if (mode == "flowmon")
        fm = fmh.InstallAll();

    Simulator::Stop(Seconds(3600)); // safety net
    auto t1 = Clock::now();
    Simulator::Run();
    auto t2 = Clock::now();
    uint64_t events = Simulator::GetEventCount();
    double simT = Simulator::Now().GetSeconds();
    uint64_t rx = DynamicCast<PacketSink>(sinkApp.Get(0))->GetTotalRx();

    char extra[1024] = "";
    if (mode == "trace" || mode == "verify")
    {
        uint64_t dataPayload = g_bigBytes - g_bigPkts * 42; // PPP 2 + IPv4 20 + TCP 20 (no options on data)
        snprintf(extra,
                 sizeof extra,
                 " a2b_pkts=%lu a2b_bytes=%lu b2a_pkts=%lu b2a_bytes=%lu data_segs_wire=%lu data_payload_wire=%lu "
                 "data_segs_sent=%lu ack_segs=%lu ctrl_a2b=%lu drops=%lu total_pkts=%lu",
                 g_txPkts[0], g_txBytes[0], g_txPkts[1], g_txBytes[1], g_bigPkts, dataPayload,
                 g_bigPkts + g_drops, g_txPkts[1], g_txPkts[0] - g_bigPkts, g_drops,
                 g_txPkts[0] + g_txPkts[1] + g_drops);
    }
    if (mode == "verify")
    {
        size_t n = strlen(extra);
        snprintf(extra + n,
                 sizeof extra - n,
                 " v_data_a2b=%lu v_payload_a2b=%lu v_pure_a2b=%lu v_ctrl_a2b=%lu v_data_b2a=%lu "
                 "v_pure_b2a=%lu v_ctrl_b2a=%lu v_ipTx_a=%lu v_ipDrop_a=%lu v_tcDrop_a=%lu v_maxCwnd=%u v_maxInFlight=%u",
                 v_data[0], v_payload[0], v_pure[0], v_ctrl[0], v_data[1], v_pure[1], v_ctrl[1],
                 v_ipTx, v_ipDrop, v_tcDrop, v_maxCwnd, v_maxInFlight);
    }
    if (mode == "flowmon")
    {
        fm->CheckForLostPackets();
        Ptr<Ipv4FlowClassifier> cl = DynamicCast<Ipv4FlowClassifier>(fmh.GetClassifier());
        uint64_t txp[2] = {0, 0}, txb[2] = {0, 0}, rxp[2] = {0, 0}, lost[2] = {0, 0};
        for (auto& kv : fm->GetFlowStats())
        {
            Ipv4FlowClassifier::FiveTuple t = cl->FindFlow(kv.first);
            int dir = t.sourceAddress == ifs.GetAddress(0) ? 0 : 1;
            txp[dir] += kv.second.txPackets;
            txb[dir] += kv.second.txBytes;
            rxp[dir] += kv.second.rxPackets;
            lost[dir] += kv.second.lostPackets;
        }
        snprintf(extra,
                 sizeof extra,
                 " fm_a2b_tx=%lu fm_a2b_txbytes=%lu fm_a2b_rx=%lu fm_b2a_tx=%lu fm_b2a_txbytes=%lu "
                 "fm_b2a_rx=%lu fm_lost=%lu total_pkts=%lu",
                 txp[0], txb[0], rxp[0], txp[1], txb[1], rxp[1], lost[0] + lost[1], txp[0] + txp[1]);
    }
    Simulator::Destroy();
    auto t3 = Clock::now();
    auto sec = [](Clock::time_point a, Clock::time_point b) {
        return std::chrono::duration<double>(b - a).count();
    };
    printf("RESULT sim=ns3 mode=%s bytes=%lu setup_s=%.6f run_s=%.6f destroy_s=%.6f sim_s=%.6f "
           "events=%lu acked=%lu acked_seq=%lu sink_rx=%lu stop_at=%.6f%s\n",
           mode.c_str(), (unsigned long)bytes, sec(t0, t1), sec(t1, t2), sec(t2, t3), simT,
           (unsigned long)events, (unsigned long)std::min(g_acked, g_total), (unsigned long)g_acked,
           (unsigned long)rx, g_stopTime, extra);
    return g_acked >= g_total ? 0 : 1;
}
